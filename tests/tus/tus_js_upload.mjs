// Uploads a file with tus-js-client (npm), the tus client nobody here wrote, which resumes from the server's
// offset after a broken connection. Driven by tests/tus.rs: node tus_js_upload.mjs ENDPOINT FILE METADATA_JSON [TOKEN]
// Prints the upload URL, then `done`; exits non-zero when the upload fails.
import { readFileSync } from "node:fs";
import * as tus from "tus-js-client";

const [endpoint, path, metadata, token] = process.argv.slice(2);
const file = readFileSync(path);
const upload = new tus.Upload(file, {
  endpoint,
  metadata: JSON.parse(metadata),
  headers: token ? { Authorization: `Bearer ${token}` } : {},
  // Quick retries: the test's proxy cuts connections; each retry asks the server for its offset (HEAD).
  retryDelays: Array(20).fill(50),
  onError(error) {
    console.error(`failed: ${error}`);
    process.exit(1);
  },
  onSuccess() {
    console.log(upload.url);
    console.log("done");
  },
});
upload.start();
