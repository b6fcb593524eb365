#!/usr/bin/env node
'use strict';
// Checks that the local IMM server (server/imm_server/) accepts requests made by
// the official Alibaba Cloud Node.js SDK core, @alicloud/openapi-client (pinned in
// package.json), called the way the generated IMM 2020-09-30 client calls
// ListBindings: callApi with an RPC-style Params and the parameters in the query.
//
//   node check.js [ENDPOINT [ACCESS_KEY_ID [ACCESS_KEY_SECRET]]]
//
// ENDPOINT is "127.0.0.1:PORT" ("http://" in front is accepted and dropped).
// Missing arguments come from the environment: IMM_ENDPOINT, IMM_ACCESS_KEY_ID or
// ALIBABA_CLOUD_ACCESS_KEY_ID, IMM_ACCESS_KEY_SECRET or ALIBABA_CLOUD_ACCESS_KEY_SECRET;
// the key defaults to the server's demo pair imm-local-id / imm-local-secret.
// The expected bindings are read from IMM_BINDINGS_FILE (default: the server's
// default data, ../sample_bindings.json), project IMM_PROJECT (default immtest).
//
// Prints one line per check, then "N passed, M failed"; exits 1 if any failed.
// Only 127.0.0.1 (or whatever ENDPOINT names) is contacted.  CommonJS, Node >= 18.

const fs = require('fs');
const http = require('http');
const path = require('path');
const crypto = require('crypto');

const OpenApi = require('@alicloud/openapi-client');
const OpenApiUtil = require('@alicloud/openapi-util').default;
const $Util = require('@alicloud/tea-util');

const argv = process.argv.slice(2);
const env = process.env;
const endpoint = String(argv[0] || env.IMM_ENDPOINT || '').replace(/^https?:\/\//, '').replace(/\/+$/, '');
const keyId = argv[1] || env.IMM_ACCESS_KEY_ID || env.ALIBABA_CLOUD_ACCESS_KEY_ID || 'imm-local-id';
const secret = argv[2] || env.IMM_ACCESS_KEY_SECRET || env.ALIBABA_CLOUD_ACCESS_KEY_SECRET || 'imm-local-secret';
const project = env.IMM_PROJECT || 'immtest';
const bindingsFile = env.IMM_BINDINGS_FILE || path.join(__dirname, '..', 'sample_bindings.json');
const PAGE = 5;

if (!/^[^/\s]+:\d+$/.test(endpoint)) {
  console.error('usage: node check.js HOST:PORT [ACCESS_KEY_ID [ACCESS_KEY_SECRET]]  (or set IMM_ENDPOINT)');
  process.exit(2);
}

// ---------------------------------------------------------------------------
// Reporting

let passed = 0;
let failed = 0;

function report(ok, name, detail) {
  if (ok) passed += 1; else failed += 1;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? ': ' + detail : ''}`);
}

async function check(name, fn) {
  try {
    const detail = await fn();
    report(true, name, detail);
    return true;
  } catch (err) {
    report(false, name, err && err.message ? err.message : String(err));
    return false;
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

// ---------------------------------------------------------------------------
// The server's unsigned control API (same port): the request log.

function control(method, pathname) {
  const [host, port] = [endpoint.slice(0, endpoint.lastIndexOf(':')), Number(endpoint.slice(endpoint.lastIndexOf(':') + 1))];
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path: pathname, agent: false, timeout: 10000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) return reject(new Error(`${method} ${pathname}: HTTP ${res.statusCode} ${text}`));
        try { resolve(JSON.parse(text)); } catch (e) { reject(new Error(`${method} ${pathname}: bad JSON: ${e.message}`)); }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${pathname}: timed out`)));
    req.on('error', reject);
    req.end();
  });
}

const clearLog = () => control('DELETE', '/_imm/log');
const readLog = () => control('GET', '/_imm/log');

// ---------------------------------------------------------------------------
// The SDK, used as the generated IMM client uses it.

function makeClient(signatureAlgorithm, overrides) {
  const config = new OpenApi.Config(Object.assign({
    accessKeyId: keyId,
    accessKeySecret: secret,
    regionId: 'cn-hangzhou',
    endpoint,
    protocol: 'http',
    readTimeout: 10000,
    connectTimeout: 5000,
  }, overrides || {}));
  if (signatureAlgorithm !== undefined) config.signatureAlgorithm = signatureAlgorithm;
  return new OpenApi.default(config);
}

function listBindingsParams() {
  // As in the generated @alicloud/imm20200930 listBindingsWithOptions.
  return new OpenApi.Params({
    action: 'ListBindings',
    version: '2020-09-30',
    protocol: 'HTTPS',          // the generated value; config.protocol = 'http' overrides it
    pathname: '/',
    method: 'POST',
    authType: 'AK',
    style: 'RPC',
    reqBodyType: 'formData',
    bodyType: 'json',
  });
}

async function listBindings(client, query, where) {
  const request = where === 'body'
    ? new OpenApi.OpenApiRequest({ body: OpenApiUtil.query(query) })
    : new OpenApi.OpenApiRequest({ query: OpenApiUtil.query(query) });
  return client.callApi(listBindingsParams(), request, new $Util.RuntimeOptions({}));
}

// The error the SDK throws for a 4xx/5xx reply: {code, statusCode?, data}.
async function expectError(promise, code) {
  let result;
  try {
    result = await promise;
  } catch (err) {
    const status = err.data && err.data.statusCode;
    assert(err.code === code, `expected error code ${code}, got ${err.code} (HTTP ${status}): ${err.message}`);
    return status;
  }
  throw new Error(`expected error ${code}, but the call succeeded (HTTP ${result && result.statusCode})`);
}

// ---------------------------------------------------------------------------
// Expected data

function expectedBindings() {
  const doc = JSON.parse(fs.readFileSync(bindingsFile, 'utf8'));
  return (Array.isArray(doc.Bindings) ? doc.Bindings : []).filter((b) => b && b.ProjectName === project);
}

const bindingKey = (b) => `${b.DatasetName || ''}\u0000${b.URI || ''}`;

// ---------------------------------------------------------------------------
// Checks for one signature configuration

function sm3Available() {
  try { crypto.createHash('sm3').update('').digest(); crypto.createHmac('sm3', 'k').update('').digest(); return true; } catch (_) { return false; }
}

async function checkMode(mode, expected, schemesSeen) {
  const label = mode.label;
  const client = makeClient(mode.algorithm);

  // 1. First page.
  await clearLog();
  let first = null;
  await check(`[${label}] ListBindings first page has ${PAGE} Bindings and a NextToken`, async () => {
    const res = await listBindings(client, { ProjectName: project, MaxResults: PAGE });
    first = res.body;
    assert(res.statusCode === 200, `HTTP ${res.statusCode}`);
    assert(first && Array.isArray(first.Bindings), `Bindings is not an array: ${JSON.stringify(first).slice(0, 200)}`);
    assert(first.Bindings.length === PAGE, `Bindings has ${first.Bindings.length} items, expected ${PAGE}`);
    assert(typeof first.NextToken === 'string' && first.NextToken !== '', `NextToken missing: ${JSON.stringify(first.NextToken)}`);
    assert(typeof first.RequestId === 'string' && first.RequestId !== '', 'RequestId missing');
    return `NextToken=${first.NextToken}`;
  });

  // 2. Which signature did the SDK use?  (from the server's request log)
  await check(`[${label}] server log: the SDK signed with ${mode.scheme}`, async () => {
    const log = await readLog();
    assert(log.length === 1, `expected 1 logged request, found ${log.length}`);
    const rec = log[0];
    schemesSeen[label] = rec.signature;
    assert(rec.signature === mode.scheme, `signature=${rec.signature}, expected ${mode.scheme}`);
    assert(rec.status === 200, `status=${rec.status}`);
    assert(rec.method === 'POST', `method=${rec.method}`);
    assert(rec.params.ProjectName === project && rec.params.MaxResults === String(PAGE),
      `params=${JSON.stringify(rec.params)}`);
    if (mode.scheme === 'v2') {
      assert(!('authorization' in rec.headers), 'a V2 request carried an Authorization header');
      assert(rec.params.SignatureMethod === 'HMAC-SHA1' && rec.params.SignatureVersion === '1.0',
        `SignatureMethod=${rec.params.SignatureMethod} SignatureVersion=${rec.params.SignatureVersion}`);
      return `signature=v2 (SignatureMethod=HMAC-SHA1, Format=${rec.params.Format}, params in the query string)`;
    }
    assert(rec.headers.authorization === '***', 'no Authorization header logged');
    return `signature=${rec.signature} (x-acs-content-sha256=${rec.headers['x-acs-content-sha256']}, `
      + `x-acs headers: ${Object.keys(rec.headers).filter((h) => h.startsWith('x-acs-')).join(',')})`;
  });

  // 3. Follow NextToken to the end.
  await clearLog();
  let pages = 0;
  await check(`[${label}] following NextToken returns all ${expected.length} bindings of ${project}`, async () => {
    assert(first && first.NextToken, 'no first page to continue from');
    const got = first.Bindings.slice();
    let token = first.NextToken;
    const maxPages = Math.ceil(expected.length / PAGE) + 5;
    while (token) {
      pages += 1;
      assert(pages <= maxPages, `still paging after ${maxPages} pages`);
      const res = await listBindings(client, { ProjectName: project, MaxResults: PAGE, NextToken: token });
      const body = res.body;
      assert(Array.isArray(body.Bindings), `page ${pages + 1}: Bindings is not an array`);
      assert(body.Bindings.length <= PAGE, `page ${pages + 1}: ${body.Bindings.length} items > MaxResults`);
      got.push(...body.Bindings);
      if (body.NextToken) assert(body.Bindings.length === PAGE, `page ${pages + 1}: short page with a NextToken`);
      token = body.NextToken;
    }
    assert(got.length === expected.length, `got ${got.length} bindings, expected ${expected.length} (from the data file)`);
    const keys = got.map(bindingKey);
    assert(new Set(keys).size === keys.length, 'duplicate bindings across pages');
    const want = new Set(expected.map(bindingKey));
    const stray = got.filter((b) => !want.has(bindingKey(b)) || b.ProjectName !== project);
    assert(stray.length === 0, `unexpected binding ${JSON.stringify(stray[0])}`);
    return `${got.length} bindings in ${pages + 1} pages`;
  });

  await check(`[${label}] server log: every page request verified as ${mode.scheme}`, async () => {
    const log = await readLog();
    assert(log.length === pages, `expected ${pages} logged requests, found ${log.length}`);
    const bad = log.filter((r) => r.signature !== mode.scheme || r.status !== 200);
    assert(bad.length === 0, `seq ${bad[0] && bad[0].seq}: signature=${bad[0] && bad[0].signature} status=${bad[0] && bad[0].status}`);
    const withToken = log.filter((r) => typeof r.params.NextToken === 'string' && r.params.NextToken.startsWith(`${project}:`));
    assert(withToken.length === pages, 'not every page request carried the NextToken');
    return `${log.length} requests, all ${mode.scheme}, all HTTP 200`;
  });

  // 4. Parameters in an x-www-form-urlencoded body instead of the query (how the SDK
  //    sends OpenApiRequest.body for RPC operations with reqBodyType formData).
  await clearLog();
  await check(`[${label}] ListBindings with the parameters in a form body`, async () => {
    const res = await listBindings(client, { ProjectName: project, MaxResults: PAGE }, 'body');
    assert(res.statusCode === 200, `HTTP ${res.statusCode}`);
    assert(Array.isArray(res.body.Bindings) && res.body.Bindings.length === PAGE, 'wrong Bindings');
    const log = await readLog();
    assert(log.length === 1 && log[0].signature === mode.scheme, `log: ${JSON.stringify(log.map((r) => r.signature))}`);
    return `content-type=${log[0].headers['content-type']}`;
  });

  // 5. Characters that need percent-encoding, in a signed value: the request must pass
  //    the signature check and fail only on the (non-existent) project.
  await check(`[${label}] a signed value with reserved and non-ASCII characters verifies (ResourceNotFound, not a signature error)`, async () => {
    const status = await expectError(
      listBindings(client, { ProjectName: "no such/project ü*'()!~+&=%", MaxResults: PAGE }), 'ResourceNotFound');
    return `HTTP ${status}`;
  });

  // 6. A wrong secret must be refused with SignatureDoesNotMatch.
  await clearLog();
  await check(`[${label}] a wrong AccessKey secret gives SignatureDoesNotMatch`, async () => {
    const bad = makeClient(mode.algorithm, { accessKeySecret: `${secret}-wrong` });
    const status = await expectError(listBindings(bad, { ProjectName: project, MaxResults: PAGE }), 'SignatureDoesNotMatch');
    const log = await readLog();
    assert(log.length === 1 && log[0].signature === mode.scheme && log[0].status === 400,
      `log: ${JSON.stringify(log.map((r) => [r.signature, r.status]))}`);
    return `HTTP ${status}, logged as ${log[0].signature}`;
  });

  // 7. An unknown AccessKey id is refused as such.
  await check(`[${label}] an unknown AccessKey id gives InvalidAccessKeyId.NotFound`, async () => {
    const bad = makeClient(mode.algorithm, { accessKeyId: `${keyId}-unknown` });
    const status = await expectError(listBindings(bad, { ProjectName: project, MaxResults: PAGE }), 'InvalidAccessKeyId.NotFound');
    return `HTTP ${status}`;
  });
}

// ---------------------------------------------------------------------------

async function main() {
  console.log(`@alicloud/openapi-client ${require('@alicloud/openapi-client/package.json').version}, `
    + `node ${process.version}, server ${endpoint}, project ${project}`);

  let expected = [];
  await check(`expected data: ${path.relative(process.cwd(), bindingsFile) || bindingsFile}`, async () => {
    expected = expectedBindings();
    assert(expected.length > PAGE, `only ${expected.length} bindings for ${project}; need more than ${PAGE}`);
    return `${expected.length} bindings in project ${project}`;
  });
  await check('server control API reachable (GET /_imm/health)', async () => {
    const health = await control('GET', '/_imm/health');
    assert(health && health.ok === true, JSON.stringify(health));
  });
  if (failed) return;

  // callApi (0.4.x): signatureVersion unset and signatureAlgorithm != 'v2' -> doRequest,
  // V3 with signatureAlgorithm defaulting to ACS3-HMAC-SHA256; signatureAlgorithm 'v2'
  // with style RPC -> doRPCRequest, the V2 (HMAC-SHA1) signature.
  const modes = [
    { label: 'default', algorithm: undefined, scheme: 'v3-sha256' },
    { label: 'ACS3-HMAC-SHA256', algorithm: 'ACS3-HMAC-SHA256', scheme: 'v3-sha256' },
    { label: 'ACS3-HMAC-SM3', algorithm: 'ACS3-HMAC-SM3', scheme: 'v3-sm3', needsSm3: true },
    { label: 'v2', algorithm: 'v2', scheme: 'v2' },
  ];
  const schemesSeen = {};
  for (const mode of modes) {
    if (mode.needsSm3 && !sm3Available()) {
      console.log(`SKIP [${mode.label}] this Node's OpenSSL has no SM3, so the SDK cannot sign with it`);
      continue;
    }
    await checkMode(mode, expected, schemesSeen);
  }
  console.log(`signature used per SDK setting: ${Object.entries(schemesSeen).map(([k, v]) => `${k} -> ${v}`).join(', ')}`);
}

main()
  .catch((err) => report(false, 'unexpected error', err && err.stack ? err.stack : String(err)))
  .then(() => {
    console.log(`${passed} passed, ${failed} failed`);
    // The SDK makes a keep-alive agent per request; do not wait for its sockets to idle out.
    process.exit(failed === 0 ? 0 : 1);
  });
