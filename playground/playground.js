// The playground's setup: GraphiQL against this server's /graphql, with example operations in tabs.
(function () {
  "use strict";

  const endpoint = new URL("/graphql", window.location.href).toString();
  // Subscriptions go over WebSocket (graphql-transport-ws); GraphiQL sends the Headers tab as the
  // connection_init payload, so {"Authorization": "Bearer <token>"} works there too.
  const subscriptionUrl = endpoint.replace(/^http/, "ws");

  const listing = `# Services that need no GPU and at most 4 GB of RAM,
# and whose TensorFlow requirement accepts version 2.13.
# Needs a token? Put {"Authorization": "Bearer <token>"}
# in the Headers tab below.
query FilteredListing {
  services(
    filter: {
      needs: {
        gpu: false
        maxRam: 4
        libraries: [{ name: "tensorflow", version: "2.13" }]
      }
    }
    first: 10
  ) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges {
      node {
        id
        description
        needs { ram storage gpu preinstalledLibraries { name version } }
        file { size sha256 downloadUrl }
      }
    }
  }
}
`;

  const runnableOn = `# Everything a device can run: what an orchestrator
# asks before it deploys a pipeline.
query RunnableOn {
  runnableOn(
    device: {
      gpu: false
      ram: 4
      storage: 32
      libraries: [{ name: "tensorflow", version: "2.13.1" }]
      models: [{ name: "fall-detection", version: "pilot-2-1" }]
    }
    first: 20
  ) {
    totalCount
    edges {
      node {
        __typename
        ... on Transformation { id }
        ... on Service { id }
        ... on Inferencer { id library }
      }
    }
  }
}
`;

  // A version of this moment, so the example never collides with the README tour's model nor with an earlier run.
  const stamp = new Date().toISOString().replace(/\D/g, "").slice(0, 14);
  const mutation = `# Registers a model. Its file is uploaded with
# uploadModelFile, a multipart request (see the README).
mutation CreateModel {
  createModel(
    input: { name: "playground-example", version: "try-${stamp}", library: "keras", description: "A CNN" }
  ) {
    name
    version
    library
    createdAt
  }
}
`;

  const feed = `# The change feed, live: press Run and change something
# (in another tab or with curl); each change appears here
# as it commits. Resume after a drop with after: <sequence>.
subscription ComponentEvents {
  componentEvents {
    sequence
    at
    type
    kind
    id
    name
    version
    file { sha256 size downloadUrl }
  }
}
`;

  const production = `# What "production" is for one device: the aliased version,
# the file built for the device's platform (or the default
# file), and who moved the alias when.
query ProductionForDevice {
  model(name: "fall-detection", alias: "production") {
    version
    aliases
    variants { platform { os arch variant accelerator } file { sha256 } }
    fileFor(device: {
      gpu: true, gpuMemory: 8
      platform: { os: "linux", arch: "arm64", accelerators: [{ name: "tensorrt", version: "8.6.1" }] }
    }) { sha256 size downloadUrl }
  }
  modelAliasHistory(name: "fall-detection", alias: "production") {
    from to at by
  }
}
`;

  const plain = GraphiQL.createFetcher({ url: endpoint, subscriptionUrl });

  /** What a refused or broken operation says in the result pane, instead of an uncaught error in the page. */
  function describe(error) {
    if (error && typeof error === "object" && "code" in error && "reason" in error) {
      return `The server closed the connection (${error.code}${error.reason ? `: ${error.reason}` : ""}). ` +
        'Needs a token? Put {"Authorization": "Bearer <token>"} in the Headers tab below.';
    }
    if (Array.isArray(error)) return error.map((e) => e?.message || String(e)).join("; ");
    return String(error?.message || error);
  }

  async function* guarded(iterable) {
    try {
      for await (const value of iterable) yield value;
    } catch (error) {
      yield { errors: [{ message: describe(error) }] };
    }
  }

  // Subscriptions come back as async iterables; their failures (a refused WebSocket) become a result too.
  function fetcher(params, options) {
    const failed = (error) => ({ errors: [{ message: describe(error) }] });
    const wrap = (value) => (value && typeof value[Symbol.asyncIterator] === "function" ? guarded(value) : value);
    let result;
    try {
      result = plain(params, options);
    } catch (error) {
      return Promise.resolve(failed(error));
    }
    return result && typeof result.then === "function" ? result.then(wrap, failed) : wrap(result);
  }

  // GraphiQL reads the schema once, with the headers of that moment: when the Headers tab settles on different
  // valid JSON (a token added, say), it is mounted again with them, so the docs and completion follow.
  function Playground() {
    const [state, setState] = React.useState({ headers: "", generation: 0 });
    const applied = React.useRef("{}");
    const timer = React.useRef(null);
    const onEditHeaders = (text) => {
      clearTimeout(timer.current);
      timer.current = setTimeout(() => {
        let canonical;
        try {
          canonical = JSON.stringify(text.trim() ? JSON.parse(text) : {});
        } catch {
          return;
        }
        if (canonical === applied.current) return;
        applied.current = canonical;
        setState((now) => ({ headers: text, generation: now.generation + 1 }));
      }, 700);
    };
    return React.createElement(GraphiQL, {
      key: state.generation,
      fetcher,
      headers: state.headers,
      onEditHeaders,
      defaultTabs: [
        { query: listing },
        { query: runnableOn },
        { query: mutation },
        { query: feed },
        { query: production },
      ],
      defaultEditorToolsVisibility: "headers",
      headerEditorEnabled: true,
      shouldPersistHeaders: false,
    });
  }

  ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(Playground));
})();
