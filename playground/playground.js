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

  const mutation = `# Registers a model. Its file is uploaded with
# uploadModelFile, a multipart request (see the README).
mutation CreateModel {
  createModel(
    input: { name: "fall-detection", version: "pilot-2-1", library: "keras", description: "A CNN" }
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
      os: "linux", arch: "arm64"
      accelerators: [{ name: "tensorrt", version: "8.6.1" }]
    }) { sha256 size downloadUrl }
  }
  modelAliasHistory(name: "fall-detection", alias: "production") {
    from to at by
  }
}
`;

  const root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: GraphiQL.createFetcher({ url: endpoint, subscriptionUrl }),
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
    }),
  );
})();
