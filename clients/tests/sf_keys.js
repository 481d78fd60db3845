'use strict';
// Check parseKey against sf_keys.json: [field value, key or null (400)].
const path = require('node:path');
const { parseKey, InvalidKey } = require(path.join(__dirname, '..', 'node'));
const cases = require('./sf_keys.json');

const bad = [];
for (const [raw, want] of cases) {
  let got;
  try {
    got = parseKey(raw);
  } catch (err) {
    if (!(err instanceof InvalidKey)) throw err;
    got = null;
  }
  if (got !== want) bad.push(`${JSON.stringify(raw)}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}
console.log(bad.length ? bad.join('\n') : `${cases.length} cases`);
process.exit(bad.length ? 1 : 0);
