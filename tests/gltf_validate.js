// Validate one glTF/GLB file with the Khronos glTF validator; print its JSON report on stdout.
// Usage: node tests/gltf_validate.js FILE   (exit 0 when the report was produced, 2 on usage error)
const fs = require("fs");
const path = require("path");
const validator = require("gltf-validator");

const file = process.argv[2];
if (!file) {
  console.error("usage: node gltf_validate.js FILE");
  process.exit(2);
}
const bytes = new Uint8Array(fs.readFileSync(file));
validator
  .validateBytes(bytes, {
    uri: path.basename(file),
    maxIssues: 100,
    // Self-contained assets only: any external reference is a failure.
    externalResourceFunction: (uri) => Promise.reject(new Error(`external resource ${uri}`)),
  })
  .then((report) => process.stdout.write(JSON.stringify(report)))
  .catch((err) => {
    console.error(String(err));
    process.exit(1);
  });
