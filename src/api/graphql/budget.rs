//! One complexity budget for all operations of an HTTP request. async-graphql limits each operation; without this,
//! a JSON batch of operations each within the limit would multiply the work (and the response) of one request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::{ErrorExtensionValues, ServerError, ValidationResult};

/// The complexity the operations of one request may still spend, shared by all of them.
pub struct RequestBudget {
    limit: usize,
    spent: AtomicUsize,
}

impl RequestBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(RequestBudget {
            limit,
            spent: AtomicUsize::new(0),
        })
    }

    /// Takes `complexity` from the budget, or refuses the operation if the request would exceed it.
    fn spend(&self, complexity: usize) -> Result<(), usize> {
        self.spent
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |spent| {
                spent
                    .checked_add(complexity)
                    .filter(|total| *total <= self.limit)
            })
            .map(|_| ())
            .map_err(|spent| spent.saturating_add(complexity))
    }
}

/// Installs [`RequestBudget`] checks in the schema: each operation's complexity, known once it is validated, is
/// taken from its request's budget before it runs.
pub struct BatchBudget;

impl ExtensionFactory for BatchBudget {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(BatchBudgetExtension)
    }
}

struct BatchBudgetExtension;

#[async_trait::async_trait]
impl Extension for BatchBudgetExtension {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        if let Some(budget) = ctx.data_opt::<Arc<RequestBudget>>() {
            budget.spend(result.complexity).map_err(|total| {
                let mut error = ServerError::new(
                    format!(
                        "the operations of this request have a complexity of at least {total} together; at most \
                         {} is allowed per request",
                        budget.limit
                    ),
                    None,
                );
                let mut extensions = ErrorExtensionValues::default();
                extensions.set("code", "INVALID_INPUT");
                error.extensions = Some(extensions);
                vec![error]
            })?;
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_shared_until_spent() {
        let budget = RequestBudget::new(10);
        assert_eq!(budget.spend(6), Ok(()));
        assert_eq!(budget.spend(5), Err(11));
        assert_eq!(budget.spend(4), Ok(()));
        assert_eq!(budget.spend(1), Err(11));
    }
}
