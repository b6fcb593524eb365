// Writes spec/fixtures/signing_extra.json to stdout: signing vectors computed
// by the official @alicloud/openapi-util (installed here by `npm ci`), in the
// format of spec/fixtures/signing.json, for cases that file lacks: parameter
// names outside the unreserved set, which the official code sorts by raw
// name. The string to sign is rebuilt the way getRPCSignature builds it and
// checked against the official signature before anything is written.
//   cd tools/sdk-check && npm ci && node gen_signing_extra.js >../../spec/fixtures/signing_extra.json
const util = require('@alicloud/openapi-util').default;
const params = {
  Action: 'ListBindings', Version: '2020-09-30', Format: 'JSON', AccessKeyId: 'LTAI_test_id',
  SignatureMethod: 'HMAC-SHA1', SignatureVersion: '1.0', SignatureNonce: '3d3f7a7ab2a54f5fa43a2c8f1c5ebd00',
  Timestamp: '2024-01-02T03:04:05Z', ProjectName: 'proj', 'Project{x}': 'v', 'Project Name': 'w',
};
const sig = util.getRPCSignature(params, 'POST', 'test_secret');
// the string to sign, rebuilt the way getRPCSignature builds it, for the record
const keys = Object.keys(params).sort();
const enc = s => encodeURIComponent(s).replace(/!/g, '%21').replace(/'/g, '%27').replace(/\(/g, '%28').replace(/\)/g, '%29').replace(/\*/g, '%2A');
const canon = keys.map(k => enc(k) + '=' + enc(params[k])).join('&');
const sts = 'POST&' + enc('/') + '&' + enc(canon);
const crypto = require('crypto');
const check = crypto.createHmac('sha1', 'test_secret&').update(sts).digest('base64');
if (check !== sig) throw new Error('rebuilt string to sign does not match');
console.log(JSON.stringify({ note: 'Computed by the official @alicloud/openapi-util ' + require('@alicloud/openapi-util/package.json').version + ' (getRPCSignature). AccessKeyId LTAI_test_id, secret test_secret. Parameter names outside the unreserved set: sorted by raw name.',
  access_key_id: 'LTAI_test_id', access_key_secret: 'test_secret', v3: [],
  v2: [{ name: 'names-outside-unreserved', method: 'POST', params, string_to_sign: sts, signature: sig }] }, null, 2));
