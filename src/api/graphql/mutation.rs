use std::sync::Arc;

use async_graphql::{Context, ID, Object, Upload};

use super::events::ComponentKind;
use super::inputs::{
    CreateInferencerInput, CreateModelInput, CreateServiceInput, CreateTransformationInput,
    NeedsInput, PlatformInput, UpdateInferencerInput, UpdateModelInput, UpdateServiceInput,
    UpdateTransformationInput, replace,
};
use super::multipart::StagedUploads;
use super::types::{FromNode, Inferencer, Long, Model, Node, Service, Signature, Transformation};
use crate::api::auth::Access;
use crate::api::error::GqlResultExt;
use crate::api::state::Links;
use crate::domain::SpecUpdate;
use crate::domain::{ComponentKey, DomainError, FileNeeds, Kind, Platform, Spec};
use crate::service::{RepositoryService, ServiceError};

pub struct MutationRoot;

fn service<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Arc<RepositoryService>> {
    ctx.data::<Arc<RepositoryService>>()
}

fn node<T: FromNode>(
    ctx: &Context<'_>,
    component: crate::domain::Component,
) -> async_graphql::Result<T> {
    T::from_node(Node::new(component, ctx.data::<Links>()?))
}

async fn create<T: FromNode>(
    ctx: &Context<'_>,
    key: Result<ComponentKey, DomainError>,
    spec: Result<Spec, DomainError>,
) -> async_graphql::Result<T> {
    let (key, spec) = (key.gql()?, spec.gql()?);
    let created = service(ctx)?.create(key, spec).await.gql()?;
    node(ctx, created)
}

async fn update<T: FromNode>(
    ctx: &Context<'_>,
    key: Result<ComponentKey, DomainError>,
    update: SpecUpdate,
    expected: Option<Long>,
) -> async_graphql::Result<T> {
    let expected = expected.map(|r| r.0);
    let key = key.gql()?;
    let updated = service(ctx)?.update(&key, update, expected).await.gql()?;
    node(ctx, updated)
}

async fn delete(
    ctx: &Context<'_>,
    key: Result<ComponentKey, DomainError>,
    force: Option<bool>,
) -> async_graphql::Result<bool> {
    let key = key.gql()?;
    service(ctx)?
        .delete_unless_in_use(&key, force.unwrap_or(false))
        .await
        .gql()?;
    Ok(true)
}

/// Attaches the file that the multipart request staged for `file`.
/// The per-platform build an upload is for: the platform, its precision and its own needs.
struct Build {
    platform: Option<PlatformInput>,
    needs: Option<NeedsInput>,
    precision: Option<String>,
}

impl Build {
    fn into_domain(self) -> Result<(Option<Platform>, Option<FileNeeds>), DomainError> {
        let mut platform = self.platform;
        if let Some(precision) = self.precision.filter(|p| !p.trim().is_empty()) {
            let Some(given) = platform.as_mut() else {
                return Err(DomainError::new(
                    "precision",
                    "names a build of a platform: give the platform too",
                ));
            };
            match &given.precision {
                Some(other) if other != &precision => {
                    return Err(DomainError::new(
                        "precision",
                        format!("is {precision} but platform.precision is {other}"),
                    ));
                }
                _ => given.precision = Some(precision),
            }
        }
        let platform = platform.map(PlatformInput::into_platform).transpose()?;
        let needs = self.needs.map(NeedsInput::into_file_needs).transpose()?;
        Ok((platform, needs))
    }
}

async fn upload<T: FromNode>(
    ctx: &Context<'_>,
    key: Result<ComponentKey, DomainError>,
    file: Upload,
    build: Build,
    expected: Option<Long>,
) -> async_graphql::Result<T> {
    let expected = expected.map(|r| r.0);
    let key = key.gql()?;
    let (platform, needs) = build.into_domain().gql()?;
    // Only uploads that our multipart reader staged are accepted: a client that forges an upload reference in a
    // plain JSON request gets a clear error instead of reaching async-graphql's upload table.
    let staged = ctx
        .data_opt::<StagedUploads>()
        .and_then(|staged| staged.take(file.0))
        .ok_or_else(|| {
            ServiceError::InvalidInput(
                "file: send the file in a multipart request (GraphQL multipart request spec)"
                    .into(),
            )
        })
        .gql()?;
    let value = file.value(ctx)?;
    let size = staged.size;
    let updated = service(ctx)?
        .attach_file(
            &key,
            staged,
            Some(&value.filename),
            value.content_type.as_deref(),
            crate::service::FileTarget { platform, needs },
            expected,
        )
        .await
        .gql()?;
    if let Ok(metrics) = ctx.data::<std::sync::Arc<crate::api::metrics::Metrics>>() {
        metrics.uploaded(size);
    }
    node(ctx, updated)
}

async fn lock<T: FromNode>(
    ctx: &Context<'_>,
    key: Result<ComponentKey, DomainError>,
    expected: Option<Long>,
) -> async_graphql::Result<T> {
    let expected = expected.map(|r| r.0);
    let key = key.gql()?;
    let locked = service(ctx)?.lock(&key, expected).await.gql()?;
    node(ctx, locked)
}

fn caller<'a>(ctx: &Context<'a>) -> &'a str {
    ctx.data_opt::<Access>()
        .map_or("anonymous", |access| access.caller.as_str())
}

/// A metadata update that only applies to one kind of spec.
fn update_of<S: 'static>(
    pick: fn(&mut Spec) -> Option<&mut S>,
    apply: impl Fn(&mut S) -> Result<(), DomainError> + Send + Sync + 'static,
) -> SpecUpdate {
    Box::new(move |spec| match pick(spec) {
        Some(inner) => apply(inner),
        None => Err(DomainError::new("kind", "metadata of another kind")),
    })
}

#[Object]
impl MutationRoot {
    /// Registers a webhook: each later change matching `kinds` and `types` is POSTed to `url` as JSON, signed in
    /// `X-Repository-Signature-256` (GitHub's scheme). Needs a write token.
    async fn create_webhook(
        &self,
        ctx: &Context<'_>,
        input: super::webhooks::CreateWebhookInput,
    ) -> async_graphql::Result<super::webhooks::Webhook> {
        super::webhooks::create(ctx, input).await
    }

    /// Removes a webhook and its deliveries. Needs a write token.
    async fn delete_webhook(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        super::webhooks::delete(ctx, id).await
    }

    /// Registers a model; its file is uploaded with `uploadModelFile`.
    async fn create_model(
        &self,
        ctx: &Context<'_>,
        input: CreateModelInput,
    ) -> async_graphql::Result<Model> {
        create(
            ctx,
            ComponentKey::model(&input.name, &input.version),
            Ok(input.spec()),
        )
        .await
    }

    /// Changes the metadata of a model; fields left out stay as they are.
    async fn update_model(
        &self,
        ctx: &Context<'_>,
        name: String,
        version: String,
        input: UpdateModelInput,
        expected_revision: Option<Long>,
    ) -> async_graphql::Result<Model> {
        let change = update_of(
            |s| match s {
                Spec::Model(m) => Some(m),
                _ => None,
            },
            move |m| {
                let input = input.clone();
                replace(&mut m.library, input.library);
                replace(&mut m.description, input.description);
                Ok(())
            },
        );
        update(
            ctx,
            ComponentKey::model(name, version),
            change,
            expected_revision,
        )
        .await
    }

    /// Starts moving an alias to a new version in stages, per hardware class, each class gated on the health its
    /// devices report (see README "Rolling out a model"). `ROLLOUT_ACTIVE` when another rollout moves the alias.
    async fn start_rollout(
        &self,
        ctx: &Context<'_>,
        input: super::rollouts::StartRolloutInput,
    ) -> async_graphql::Result<super::rollouts::Rollout> {
        super::rollouts::start(ctx, input, caller(ctx)).await
    }

    /// Stops a rollout's steps; its cohorts stay where they are. `ROLLOUT_FINISHED` once it has ended.
    async fn pause_rollout(
        &self,
        ctx: &Context<'_>,
        id: async_graphql::ID,
    ) -> async_graphql::Result<super::rollouts::Rollout> {
        Ok(service(ctx)?.pause_rollout(&id).await.gql()?.into())
    }

    /// Runs a paused rollout's steps again; the pause does not count against the current step.
    async fn resume_rollout(
        &self,
        ctx: &Context<'_>,
        id: async_graphql::ID,
    ) -> async_graphql::Result<super::rollouts::Rollout> {
        Ok(service(ctx)?.resume_rollout(&id).await.gql()?.into())
    }

    /// Ends a rollout with every device back on the old version; the alias stays where it was.
    async fn abort_rollout(
        &self,
        ctx: &Context<'_>,
        id: async_graphql::ID,
    ) -> async_graphql::Result<super::rollouts::Rollout> {
        Ok(service(ctx)?.abort_rollout(&id).await.gql()?.into())
    }

    /// Points `alias` (such as `production`) of model `name` at `version`, recording the move in the alias's
    /// history. A version that aliases name cannot be deleted until they move. With `expectedRevision` (the
    /// `revision` of `version` as you read it), refused with `CONFLICT` when that version changed since.
    async fn set_model_alias(
        &self,
        ctx: &Context<'_>,
        name: String,
        alias: String,
        version: String,
        expected_revision: Option<Long>,
    ) -> async_graphql::Result<Model> {
        let model = service(ctx)?
            .set_alias(
                &name,
                &alias,
                &version,
                caller(ctx),
                expected_revision.map(|r| r.0),
            )
            .await
            .gql()?;
        node(ctx, model)
    }

    /// Removes `alias` of model `name`, recording it in the alias's history. With `expectedRevision` (the
    /// `revision` of the version the alias names, as you read it), refused with `CONFLICT` when it changed since.
    async fn delete_model_alias(
        &self,
        ctx: &Context<'_>,
        name: String,
        alias: String,
        expected_revision: Option<Long>,
    ) -> async_graphql::Result<bool> {
        service(ctx)?
            .delete_alias(&name, &alias, caller(ctx), expected_revision.map(|r| r.0))
            .await
            .gql()?;
        Ok(true)
    }

    /// Attaches a signature to a component's file: `bundle` is the Sigstore bundle exactly as `model_signing sign`
    /// writes it, and its statement must name the file's sha256. `platform` names a per-platform file (exactly as
    /// uploaded), else the default file. Name the component by `name` and `version` (models) or `id`. Attaching
    /// the same bundle again changes nothing. Works on locked components: a signature vouches for bytes, it does
    /// not change them.
    #[allow(clippy::too_many_arguments)]
    async fn add_signature(
        &self,
        ctx: &Context<'_>,
        kind: ComponentKind,
        name: Option<String>,
        version: Option<String>,
        id: Option<ID>,
        platform: Option<PlatformInput>,
        bundle: String,
    ) -> async_graphql::Result<Signature> {
        let key = match (Kind::from(kind), name, version, id) {
            (Kind::Model, Some(name), Some(version), None) => ComponentKey::model(name, version),
            (Kind::Model, ..) => Err(DomainError::new(
                "name",
                "a model is named by `name` and `version` (and no `id`)",
            )),
            (kind, None, None, Some(id)) => ComponentKey::with_id(kind, id.0),
            (kind, ..) => Err(DomainError::new(
                "id",
                format!("a {kind} is named by `id` (and no `name` or `version`)"),
            )),
        }
        .gql()?;
        let platform = platform
            .map(PlatformInput::into_platform)
            .transpose()
            .gql()?;
        let (_, checked, _) = service(ctx)?
            .add_signature(&key, platform, &bundle, caller(ctx))
            .await
            .gql()?;
        Ok(Signature::from(checked))
    }

    /// Locks a model version for good: its file can no longer be replaced, nor the model deleted once it has one.
    async fn lock_model(
        &self,
        ctx: &Context<'_>,
        name: String,
        version: String,
        expected_revision: Option<Long>,
    ) -> async_graphql::Result<Model> {
        lock(ctx, ComponentKey::model(name, version), expected_revision).await
    }

    /// Locks a transformation for good (see `lockModel`).
    async fn lock_transformation(
        &self,
        ctx: &Context<'_>,
        id: ID,
        expected_revision: Option<Long>,
    ) -> async_graphql::Result<Transformation> {
        lock(
            ctx,
            ComponentKey::with_id(Kind::Transformation, id.0),
            expected_revision,
        )
        .await
    }

    /// Locks a service for good (see `lockModel`).
    async fn lock_service(
        &self,
        ctx: &Context<'_>,
        id: ID,
        expected_revision: Option<Long>,
    ) -> async_graphql::Result<Service> {
        lock(
            ctx,
            ComponentKey::with_id(Kind::Service, id.0),
            expected_revision,
        )
        .await
    }

    /// Locks an inferencer for good (see `lockModel`).
    async fn lock_inferencer(
        &self,
        ctx: &Context<'_>,
        id: ID,
        expected_revision: Option<Long>,
    ) -> async_graphql::Result<Inferencer> {
        lock(
            ctx,
            ComponentKey::with_id(Kind::Inferencer, id.0),
            expected_revision,
        )
        .await
    }

    /// Deletes a model and its file. Refused (`IN_USE`, with `extensions.devices`) while live devices report
    /// running it, unless `force`.
    async fn delete_model(
        &self,
        ctx: &Context<'_>,
        name: String,
        version: String,
        force: Option<bool>,
    ) -> async_graphql::Result<bool> {
        delete(ctx, ComponentKey::model(name, version), force).await
    }

    /// Uploads (or replaces) the file of a model. Send as a multipart request. With `platform` the file is that
    /// platform's build (one per platform and `precision`, such as `4bit` or `fp16`), and `needs` (storage, ram,
    /// gpu, gpuMemory) are what this build needs instead of the component's; without, it is the default file.
    // One argument per GraphQL argument of the mutation: the schema, not this signature, is what users read.
    #[allow(clippy::too_many_arguments)]
    async fn upload_model_file(
        &self,
        ctx: &Context<'_>,
        name: String,
        version: String,
        file: Upload,
        platform: Option<PlatformInput>,
        needs: Option<NeedsInput>,
        precision: Option<String>,
        expected_revision: Option<Long>,
    ) -> async_graphql::Result<Model> {
        upload(
            ctx,
            ComponentKey::model(name, version),
            file,
            Build {
                platform,
                needs,
                precision,
            },
            expected_revision,
        )
        .await
    }

    async fn create_transformation(
        &self,
        ctx: &Context<'_>,
        input: CreateTransformationInput,
    ) -> async_graphql::Result<Transformation> {
        let key = ComponentKey::with_id(Kind::Transformation, input.id.0.clone());
        create(ctx, key, input.into_spec()).await
    }

    async fn update_transformation(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateTransformationInput,
        expected_revision: Option<Long>,
    ) -> async_graphql::Result<Transformation> {
        let change = update_of(
            |s| match s {
                Spec::Transformation(t) => Some(t),
                _ => None,
            },
            move |t| input.clone().apply(t),
        );
        update(
            ctx,
            ComponentKey::with_id(Kind::Transformation, id.0),
            change,
            expected_revision,
        )
        .await
    }

    /// Deletes a transformation; refused (`IN_USE`) while live devices report running it, unless `force`.
    async fn delete_transformation(
        &self,
        ctx: &Context<'_>,
        id: ID,
        force: Option<bool>,
    ) -> async_graphql::Result<bool> {
        delete(
            ctx,
            ComponentKey::with_id(Kind::Transformation, id.0),
            force,
        )
        .await
    }

    /// Uploads (or replaces) the file of a transformation. Send as a multipart request. With `platform` the file is that
    /// platform's build (one per platform and `precision`, such as `4bit` or `fp16`), and `needs` (storage, ram,
    /// gpu, gpuMemory) are what this build needs instead of the component's; without, it is the default file.
    // One argument per GraphQL argument of the mutation: the schema, not this signature, is what users read.
    #[allow(clippy::too_many_arguments)]
    async fn upload_transformation_file(
        &self,
        ctx: &Context<'_>,
        id: ID,
        file: Upload,
        platform: Option<PlatformInput>,
        needs: Option<NeedsInput>,
        precision: Option<String>,
        expected_revision: Option<Long>,
    ) -> async_graphql::Result<Transformation> {
        upload(
            ctx,
            ComponentKey::with_id(Kind::Transformation, id.0),
            file,
            Build {
                platform,
                needs,
                precision,
            },
            expected_revision,
        )
        .await
    }

    async fn create_service(
        &self,
        ctx: &Context<'_>,
        input: CreateServiceInput,
    ) -> async_graphql::Result<Service> {
        let key = ComponentKey::with_id(Kind::Service, input.id.0.clone());
        create(ctx, key, input.into_spec()).await
    }

    async fn update_service(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateServiceInput,
        expected_revision: Option<Long>,
    ) -> async_graphql::Result<Service> {
        let change = update_of(
            |s| match s {
                Spec::Service(s) => Some(s),
                _ => None,
            },
            move |s| {
                let input = input.clone();
                replace(&mut s.description, input.description);
                input.needs.unwrap_or_default().apply(&mut s.needs)
            },
        );
        update(
            ctx,
            ComponentKey::with_id(Kind::Service, id.0),
            change,
            expected_revision,
        )
        .await
    }

    /// Deletes a service; refused (`IN_USE`) while live devices report running it, unless `force`.
    async fn delete_service(
        &self,
        ctx: &Context<'_>,
        id: ID,
        force: Option<bool>,
    ) -> async_graphql::Result<bool> {
        delete(ctx, ComponentKey::with_id(Kind::Service, id.0), force).await
    }

    /// Uploads (or replaces) the file of a service. Send as a multipart request. With `platform` the file is that
    /// platform's build (one per platform and `precision`, such as `4bit` or `fp16`), and `needs` (storage, ram,
    /// gpu, gpuMemory) are what this build needs instead of the component's; without, it is the default file.
    // One argument per GraphQL argument of the mutation: the schema, not this signature, is what users read.
    #[allow(clippy::too_many_arguments)]
    async fn upload_service_file(
        &self,
        ctx: &Context<'_>,
        id: ID,
        file: Upload,
        platform: Option<PlatformInput>,
        needs: Option<NeedsInput>,
        precision: Option<String>,
        expected_revision: Option<Long>,
    ) -> async_graphql::Result<Service> {
        upload(
            ctx,
            ComponentKey::with_id(Kind::Service, id.0),
            file,
            Build {
                platform,
                needs,
                precision,
            },
            expected_revision,
        )
        .await
    }

    async fn create_inferencer(
        &self,
        ctx: &Context<'_>,
        input: CreateInferencerInput,
    ) -> async_graphql::Result<Inferencer> {
        let key = ComponentKey::with_id(Kind::Inferencer, input.id.0.clone());
        create(ctx, key, input.into_spec()).await
    }

    async fn update_inferencer(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateInferencerInput,
        expected_revision: Option<Long>,
    ) -> async_graphql::Result<Inferencer> {
        let change = update_of(
            |s| match s {
                Spec::Inferencer(i) => Some(i),
                _ => None,
            },
            move |i| {
                let input = input.clone();
                replace(&mut i.description, input.description);
                replace(&mut i.library, input.library);
                replace(&mut i.use_cuda, input.use_cuda);
                input.needs.unwrap_or_default().apply(&mut i.needs)
            },
        );
        update(
            ctx,
            ComponentKey::with_id(Kind::Inferencer, id.0),
            change,
            expected_revision,
        )
        .await
    }

    /// Deletes an inferencer; refused (`IN_USE`) while live devices report running it, unless `force`.
    async fn delete_inferencer(
        &self,
        ctx: &Context<'_>,
        id: ID,
        force: Option<bool>,
    ) -> async_graphql::Result<bool> {
        delete(ctx, ComponentKey::with_id(Kind::Inferencer, id.0), force).await
    }

    /// Uploads (or replaces) the file of a inferencer. Send as a multipart request. With `platform` the file is that
    /// platform's build (one per platform and `precision`, such as `4bit` or `fp16`), and `needs` (storage, ram,
    /// gpu, gpuMemory) are what this build needs instead of the component's; without, it is the default file.
    // One argument per GraphQL argument of the mutation: the schema, not this signature, is what users read.
    #[allow(clippy::too_many_arguments)]
    async fn upload_inferencer_file(
        &self,
        ctx: &Context<'_>,
        id: ID,
        file: Upload,
        platform: Option<PlatformInput>,
        needs: Option<NeedsInput>,
        precision: Option<String>,
        expected_revision: Option<Long>,
    ) -> async_graphql::Result<Inferencer> {
        upload(
            ctx,
            ComponentKey::with_id(Kind::Inferencer, id.0),
            file,
            Build {
                platform,
                needs,
                precision,
            },
            expected_revision,
        )
        .await
    }
}
