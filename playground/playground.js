// The playground's setup: GraphiQL against this server's /graphql, with example operations in tabs.
(function () {
  "use strict";

  const endpoint = new URL("/graphql", window.location.href).toString();
  // Subscriptions go over WebSocket (graphql-transport-ws, our own client below); it sends the Headers tab as the
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

  const plain = GraphiQL.createFetcher({ url: endpoint });

  /** What a refused or broken operation says in the result pane, instead of an uncaught error in the page. */
  function describe(error) {
    if (error && typeof error === "object" && "code" in error && "reason" in error) {
      return `The server closed the connection (${error.code}${error.reason ? `: ${error.reason}` : ""}). ` +
        'Needs a token? Put {"Authorization": "Bearer <token>"} in the Headers tab below.';
    }
    if (Array.isArray(error)) return error.map((e) => e?.message || String(e)).join("; ");
    return String(error?.message || error);
  }

  /** Whether the operation GraphiQL runs is a subscription. */
  function isSubscription({ query, operationName }) {
    const operations = [...String(query).matchAll(/(^|[}\s])(query|mutation|subscription)\b\s*([_A-Za-z][_0-9A-Za-z]*)?/g)];
    const chosen = operationName ? operations.find((m) => m[3] === operationName) : operations[0];
    return chosen?.[2] === "subscription";
  }

  /**
   * A subscription over graphql-transport-ws as an async iterable whose every end is a value or the end: a refusal
   * (a close code, an `error` message) becomes a result with `errors`. GraphiQL's own WebSocket fetcher turns a
   * close into a rejected promise nobody awaits when the close races the pane's first read: an uncaught page error
   * and an empty pane.
   */
  function subscribe(params, headers) {
    return {
      [Symbol.asyncIterator]() {
        const queue = [];
        let waiting = null;
        let finished = false;
        const push = (item) => {
          if (waiting) {
            const resolve = waiting;
            waiting = null;
            resolve(item);
          } else {
            queue.push(item);
          }
        };
        const end = () => push({ value: undefined, done: true });
        const socket = new WebSocket(subscriptionUrl, "graphql-transport-ws");
        socket.onopen = () => socket.send(JSON.stringify({ type: "connection_init", payload: headers || {} }));
        socket.onmessage = (event) => {
          let message;
          try {
            message = JSON.parse(event.data);
          } catch {
            return;
          }
          if (message.type === "connection_ack") {
            socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: params }));
          } else if (message.type === "ping") {
            socket.send(JSON.stringify({ type: "pong" }));
          } else if (message.type === "next") {
            push({ value: message.payload, done: false });
          } else if (message.type === "error") {
            push({ value: { errors: message.payload }, done: false });
            finished = true;
            end();
            socket.close(1000);
          } else if (message.type === "complete") {
            finished = true;
            end();
            socket.close(1000);
          }
        };
        socket.onerror = () => {};
        socket.onclose = (event) => {
          if (finished) return;
          finished = true;
          push({ value: { errors: [{ message: describe(event) }] }, done: false });
          end();
        };
        return {
          next() {
            if (queue.length > 0) return Promise.resolve(queue.shift());
            return new Promise((resolve) => { waiting = resolve; });
          },
          return() {
            if (!finished) {
              finished = true;
              try {
                socket.send(JSON.stringify({ id: "1", type: "complete" }));
              } catch {
                // Not open yet: closing is enough.
              }
              socket.close(1000);
            }
            return Promise.resolve({ value: undefined, done: true });
          },
        };
      },
    };
  }

  // Queries and mutations go over HTTP; subscriptions over our WebSocket client, whose failures are results too.
  function fetcher(params, options) {
    if (isSubscription(params)) return subscribe(params, options?.headers);
    const failed = (error) => ({ errors: [{ message: describe(error) }] });
    let result;
    try {
      result = plain(params, options);
    } catch (error) {
      return Promise.resolve(failed(error));
    }
    return result && typeof result.then === "function" ? result.catch(failed) : result;
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
