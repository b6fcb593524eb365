#!/usr/bin/env node
'use strict';
// The differential check: every IMM action sent by the official SDK core and by
// imm to the same recorder (recorder.js), and the two requests compared.
//
//   node sdkdiff.js [--lua lua5.4] [--cpath 'build/lua5.4/?.so'] [--only ACTION] [-v]
//
// Calls: one per action of api/imm-2020-09-30.json with every field filled,
// and the realistic calls (cases.js); the realistic ones once more with the V2
// signature (both sides signatureAlgorithm "v2"), where body parameters travel
// in the form body too, and once more through client:call instead of the
// generated methods.
//
// The SDK side: @alicloud/imm20200930 (the generated IMM client) is not on the
// npm registry this project installs from, so this check does what each of its
// generated xxxWithOptions methods does, with the same official core it calls
// (@alicloud/openapi-core, pinned in package.json): every "json" parameter
// through OpenApiUtil.arrayToStringWithSpecifiedStyle(value, Name, "json"),
// query parameters through OpenApiUtil.query, body parameters through
// OpenApiUtil.parseToMap, then callApi with an RPC Params (POST /, formData).
// Which parameter is "json" and which travels in the body comes from the API
// description, which records the generated client's choices.
//
// The imm side: tools/sdk-check/imm_send.lua run with LUA (default lua5.4) on
// the working tree's lua/ and the built imm.core.
//
// Compared per call: method, path, action, every parameter (scalars as text,
// JSON values decoded with each number's text kept, so 0.7 and
// 0.69999999999999996 differ and [] and {} differ), where each one travels
// (query or body), the content type, and that x-acs-content-sha256 is the hash
// of the body sent.  Prints one line per differing call and
// "sdkdiff: N calls: M identical, K differ"; exits 1 on any difference but the
// known ones (cases.js marks them; each prints a KNOWN line).

const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');

const OpenApi = require('@alicloud/openapi-core').default;
const { OpenApiUtil, $OpenApiUtil } = require('@alicloud/openapi-core');
const $dara = require('@darabonba/typescript');

const recorder = require('./recorder');
const { fullCases, realisticCases, headerCases } = require('./cases');

const root = path.resolve(__dirname, '..', '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const LUA = opt('--lua', process.env.LUA || 'lua5.4');
const CPATH = opt('--cpath', process.env.IMM_CPATH || `build/${LUA}/?.so`);
const ONLY = opt('--only', null);
const VERBOSE = args.includes('-v');
const api = JSON.parse(fs.readFileSync(path.join(root, 'api', 'imm-2020-09-30.json'), 'utf8'));

// Names V2 adds to every request; they are the signature's, not the call's.
const V2_COMMON = new Set(['Action', 'Version', 'Format', 'AccessKeyId', 'SignatureMethod', 'SignatureVersion',
  'SignatureNonce', 'Timestamp', 'Signature', 'SecurityToken', 'SignatureType']);

// ---------------------------------------------------------------------------
// The cases must only use names the description knows: the SDK's models drop
// unknown fields, so a typo would make the two sides differ for no reason.

function checkValue(type, v, where, problems) {
  if (typeof type === 'string') return;
  if (type.array !== undefined) {
    if (!Array.isArray(v)) { problems.push(`${where}: not an array`); return; }
    v.forEach((x, i) => checkValue(type.array, x, `${where}[${i}]`, problems));
  } else if (type.map !== undefined) {
    for (const [k, x] of Object.entries(v)) checkValue(type.map, x, `${where}.${k}`, problems);
  } else if (type.model !== undefined) {
    const fields = new Map(api.models[type.model].fields.map((f) => [f.name, f]));
    for (const [k, x] of Object.entries(v)) {
      if (!fields.has(k)) problems.push(`${where}.${k}: not a field of ${type.model}`);
      else checkValue(fields.get(k).type, x, `${where}.${k}`, problems);
    }
  }
}

function checkCase(c) {
  const spec = api.actions[c.action];
  if (!spec) return [`${c.action} is not in the description`];
  const params = new Map(spec.params.map((p) => [p.name, p]));
  const problems = [];
  for (const [k, v] of Object.entries(c.params)) {
    if (!params.has(k)) problems.push(`${k}: not a parameter of ${c.action}`);
    else checkValue(params.get(k).type, v, k, problems);
  }
  return problems;
}

// ---------------------------------------------------------------------------
// The SDK side: what a generated xxxWithOptions(request, runtime) does.

function sdkClient(port, algorithm) {
  const config = new $OpenApiUtil.Config({
    accessKeyId: 'imm-sdkdiff-id', accessKeySecret: 'imm-sdkdiff-secret', regionId: 'cn-hangzhou',
    endpoint: `127.0.0.1:${port}`, protocol: 'http', readTimeout: 10000, connectTimeout: 5000,
  });
  if (algorithm) config.signatureAlgorithm = algorithm;
  return new OpenApi(config);
}

async function sdkSend(client, c) {
  const spec = api.actions[c.action];
  const query = {};
  const body = {};
  for (const p of spec.params) {
    if (c.params[p.name] === undefined) continue;
    let v = c.params[p.name];
    if (p.encoding === 'json') v = OpenApiUtil.arrayToStringWithSpecifiedStyle(v, p.name, 'json');
    (p.in === 'body' ? body : query)[p.name] = v;
  }
  // The generated code passes `query` when the action has query parameters and
  // `body` when it has body parameters, whether or not the call fills them.
  const req = {};
  if (spec.params.some((p) => p.in === 'query')) req.query = OpenApiUtil.query(query);
  if (spec.params.some((p) => p.in === 'body')) req.body = OpenApiUtil.parseToMap(body);
  if (c.headers) req.headers = Object.assign({}, c.headers);
  const params = new $OpenApiUtil.Params({
    action: c.action, version: '2020-09-30', protocol: 'HTTPS', pathname: spec.path || '/',
    method: spec.method || 'POST', authType: 'AK', style: 'RPC', reqBodyType: 'formData', bodyType: 'json',
  });
  return client.callApi(params, new $OpenApiUtil.OpenApiRequest(req), new $dara.RuntimeOptions({ autoretry: false }));
}

// ---------------------------------------------------------------------------
// The imm side.

// Asynchronous: the recorder runs in this process and must go on answering.
async function immSend(cases, port, algorithm, via) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdkdiff-'));
  const file = path.join(dir, 'cases.json');
  fs.writeFileSync(file, JSON.stringify(cases));
  const env = Object.assign({}, process.env, {
    LUA_PATH: `${path.join(root, 'lua', '?.lua')};${path.join(root, 'lua', '?', 'init.lua')};;`,
    LUA_CPATH: `${path.resolve(root, CPATH)};;`,
    no_proxy: '127.0.0.1,localhost', NO_PROXY: '127.0.0.1,localhost',
    ALIBABA_CLOUD_ECS_METADATA_DISABLED: 'true',
  });
  const r = await new Promise((resolve) => {
    const child = spawn(LUA, [path.join(__dirname, 'imm_send.lua'), file, `127.0.0.1:${port}`, algorithm || '', via || ''],
      { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill(), 300000);
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', (error) => { clearTimeout(timer); resolve({ error, stdout, stderr }); });
    child.on('close', (status) => { clearTimeout(timer); resolve({ status, stdout, stderr }); });
  });
  fs.rmSync(dir, { recursive: true, force: true });
  if (r.error || r.status !== 0) {
    throw new Error(`${LUA} imm_send.lua failed (${r.error ? r.error.message : `exit ${r.status}`}): ${r.stderr}`);
  }
  const out = new Map();
  for (const line of r.stdout.split('\n')) {
    const m = /^(ok|err) (\S+) (\S+)(?: (.*))?$/.exec(line);
    if (m) out.set(m[2], { ok: m[1] === 'ok', via: m[3], error: m[4] });
  }
  return out;
}

// ---------------------------------------------------------------------------
// Comparison

function same(a, b) {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (a.$num !== undefined || b.$num !== undefined) return a.$num === b.$num;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && same(a[k], b[k]));
}

// Where two decoded JSON values first differ: "[0].Elements[1]: SDK [], imm {}".
function whereDiffer(a, b, at) {
  const text = (v) => JSON.stringify(v, (k, x) => (x && x.$num !== undefined ? Number(x.$num) : x))
    .replace(/"\$num":"([^"]*)"/g, '$1');
  const num = (v) => v && typeof v === 'object' && v.$num !== undefined;
  const plain = (v) => (num(v) ? v.$num : text(v));
  if (num(a) || num(b) || a === null || b === null || typeof a !== 'object' || typeof b !== 'object'
      || Array.isArray(a) !== Array.isArray(b)) {
    return `${at || '(top)'}: SDK ${plain(a)}, imm ${plain(b)}`;
  }
  const keys = new Set(Object.keys(a).concat(Object.keys(b)));
  for (const k of keys) {
    const sub = Array.isArray(a) ? `${at}[${k}]` : `${at}.${k}`;
    if (!(k in a)) return `${sub}: only imm sends it`;
    if (!(k in b)) return `${sub}: imm does not send it`;
    if (!same(a[k], b[k])) return whereDiffer(a[k], b[k], sub);
  }
  return `${at || '(top)'}: lengths differ`;
}

const show = (s) => (s.length > 160 ? `${JSON.stringify(s.slice(0, 160))}...` : JSON.stringify(s));

function paramsOf(rec) {
  const out = new Map();
  for (const [k, v] of Object.entries(rec.query)) if (!V2_COMMON.has(k)) out.set(k, { where: 'query', v });
  for (const [k, v] of Object.entries(rec.body || {})) if (!V2_COMMON.has(k)) out.set(k, { where: 'body', v });
  return out;
}

// What the compared requests held, so the summary says what was covered.
const stats = { params: 0, query: 0, body: 0, json: 0, scalarFloats: 0, jsonNumbers: 0, jsonFloats: 0,
  bigIntegers: 0, emptyArrays: 0, emptyObjects: 0, headers: 0 };

function count(v) {
  if (Array.isArray(v)) {
    if (v.length === 0) stats.emptyArrays += 1;
    v.forEach(count);
  } else if (v !== null && typeof v === 'object') {
    if (v.$num !== undefined) {
      stats.jsonNumbers += 1;
      if (/[.eE]/.test(v.$num)) stats.jsonFloats += 1;
      if (/^-?\d{16,}$/.test(v.$num) || /^-?\d{15}$/.test(v.$num)) stats.bigIntegers += 1;
      return;
    }
    if (Object.keys(v).length === 0) stats.emptyObjects += 1;
    Object.values(v).forEach(count);
  }
}

function compare(c, sdk, imm) {
  if (sdk.error) return [`the recorder could not decode the SDK's request: ${sdk.error}`];
  if (imm.error) return [`the recorder could not decode imm's request: ${imm.error}`];
  const diffs = [];
  for (const k of ['method', 'path', 'action']) {
    if (sdk[k] !== imm[k]) diffs.push(`${k}: SDK ${sdk[k]}, imm ${imm[k]}`);
  }
  if ((sdk.contentType || '').toLowerCase() !== (imm.contentType || '').toLowerCase()) {
    diffs.push(`content-type: SDK ${sdk.contentType}, imm ${imm.contentType}`);
  }
  if (imm.contentSha256 !== null && imm.contentSha256 !== imm.bodySha256) {
    diffs.push('imm: x-acs-content-sha256 is not the SHA-256 of the body sent');
  }
  // extra headers: each sent with the same value, and signed by both or neither
  for (const name of Object.keys(c.headers || {})) {
    const signed = (r) => (r.signedHeaders || '').split(';').includes(name);
    if (sdk.headers[name] !== imm.headers[name]) {
      diffs.push(`header ${name}: SDK ${show(String(sdk.headers[name]))}, imm ${show(String(imm.headers[name]))}`);
    }
    if (signed(sdk) !== signed(imm)) {
      diffs.push(`header ${name}: the SDK ${signed(sdk) ? 'signs' : 'does not sign'} it, imm ${signed(imm) ? 'does' : 'does not'}`);
    }
    stats.headers += 1;
  }
  const spec = new Map(api.actions[c.action].params.map((p) => [p.name, p]));
  const a = paramsOf(sdk);
  const b = paramsOf(imm);
  for (const [name, x] of a) {
    stats.params += 1;
    stats[x.where] += 1;
    const p0 = spec.get(name);
    if (p0 && p0.encoding === 'json') {
      stats.json += 1;
      try { count(recorder.decodeJsonValue(x.v)); } catch (e) { /* reported below */ }
    } else if (p0 && p0.type === 'number' && /[.eE]/.test(x.v)) {
      stats.scalarFloats += 1;
    }
    const y = b.get(name);
    if (!y) { diffs.push(`${name}: SDK sends it in the ${x.where}, imm does not send it`); continue; }
    if (x.where !== y.where) diffs.push(`${name}: SDK sends it in the ${x.where}, imm in the ${y.where}`);
    const p = spec.get(name);
    if (p && p.encoding === 'json') {
      let dx;
      let dy;
      try { dx = recorder.decodeJsonValue(x.v); } catch (e) { diffs.push(`${name}: the SDK's value is not JSON`); continue; }
      try { dy = recorder.decodeJsonValue(y.v); } catch (e) { diffs.push(`${name}: imm's value is not JSON: ${show(y.v)}`); continue; }
      if (!same(dx, dy)) diffs.push(`${name}: JSON differs at ${name}${whereDiffer(dx, dy, '')}`);
    } else if (x.v !== y.v) {
      diffs.push(`${name}: SDK ${show(x.v)}, imm ${show(y.v)}`);
    }
  }
  for (const [name, y] of b) {
    if (!a.has(name)) diffs.push(`${name}: imm sends it in the ${y.where}, the SDK does not send it`);
  }
  return diffs;
}

// ---------------------------------------------------------------------------

async function runSet(label, cases, rec, algorithm, how) {
  const client = sdkClient(rec.port, algorithm);
  const sdkRecs = new Map();
  for (const c of cases) {
    rec.clear();
    await sdkSend(client, c);
    if (rec.records.length !== 1) throw new Error(`${c.id}: the SDK sent ${rec.records.length} requests`);
    sdkRecs.set(c.id, rec.records[0]);
  }
  rec.clear();
  const ids = [];
  rec.onRecord = null;
  const results = await immSend(cases, rec.port, algorithm, how);
  // imm sends the calls in order, one request each (max_retries = 0); a call it
  // refused before sending has no request, so match requests to calls by action.
  const immRecs = new Map();
  let i = 0;
  for (const c of cases) {
    const r = results.get(c.id);
    if (r && r.ok) {
      while (i < rec.records.length && rec.records[i].action !== c.action) i += 1;
      if (i < rec.records.length) { immRecs.set(c.id, rec.records[i]); i += 1; }
    }
    ids.push(c.id);
  }
  let identical = 0;
  let known = 0;
  const via = {};
  for (const c of cases) {
    const r = results.get(c.id);
    const name = `${label} ${c.id}`;
    if (r) via[r.via] = (via[r.via] || 0) + 1;
    let diffs;
    if (!r) diffs = ['imm did not report on this call'];
    else if (!r.ok) diffs = [`imm refused or failed: ${r.error}`];
    else if (!immRecs.has(c.id)) diffs = ['imm reported success but the recorder got no request'];
    else diffs = compare(c, sdkRecs.get(c.id), immRecs.get(c.id));
    if (diffs.length === 0) {
      identical += 1;
      if (c.known) console.log(`NOW SAME ${name}: no longer differs (${c.known}): drop "known" in cases.js`);
      else if (VERBOSE) console.log(`same ${name}`);
    } else if (c.known) {
      known += 1;
      console.log(`KNOWN ${name}: ${c.known}: ${diffs.join('; ')}`);
    } else {
      console.log(`DIFF ${name}: ${diffs.join('; ')}`);
    }
  }
  return { total: cases.length, identical, known, via };
}

async function main() {
  let full = fullCases(api);
  let real = realisticCases();
  let withHeaders = headerCases();
  if (ONLY) {
    full = full.filter((c) => c.action === ONLY); real = real.filter((c) => c.action === ONLY);
    withHeaders = withHeaders.filter((c) => c.action === ONLY);
  }
  const bad = full.concat(real).map((c) => [c.id, checkCase(c)]).filter(([, p]) => p.length);
  if (bad.length) {
    for (const [id, p] of bad) console.log(`BAD CASE ${id}: ${p.join('; ')}`);
    throw new Error('the cases use names the API description does not have');
  }
  const rec = await recorder.start();
  let total = 0;
  let identical = 0;
  let knownAll = 0;
  const via = {};
  const sets = [['all-fields', full], ['realistic', real], ['realistic-v2', real, 'v2'],
    ['realistic-call', real, undefined, 'call'], ['headers', withHeaders], ['headers-v2', withHeaders, 'v2']];
  try {
    for (const [label, cases, algorithm, how] of sets) {
      const r = await runSet(label, cases, rec, algorithm, how);
      const knownText = r.known ? ` (${r.known} known)` : '';
      console.log(`sdkdiff: ${label}: ${r.total} ${label === 'all-fields' ? 'actions' : 'calls'}: `
        + `${r.identical} identical, ${r.total - r.identical} differ${knownText}`);
      total += r.total; identical += r.identical; knownAll += r.known;
      for (const [k, v] of Object.entries(r.via)) via[k] = (via[k] || 0) + v;
    }
  } finally {
    await rec.close();
  }
  console.log(`sdkdiff: imm sent ${via.method || 0} calls through generated methods, ${via.call || 0} through client:call`);
  console.log(`sdkdiff: compared ${stats.params} parameters (${stats.query} in the query, ${stats.body} in a form body; `
    + `${stats.json} JSON values holding ${stats.jsonNumbers} numbers, ${stats.jsonFloats} of them floats and `
    + `${stats.bigIntegers} integers of 15+ digits, ${stats.emptyArrays} empty arrays, ${stats.emptyObjects} empty objects; `
    + `${stats.scalarFloats} scalar floats; ${stats.headers} extra headers)`);
  console.log(`sdkdiff: ${total} calls: ${identical} identical, ${total - identical} differ`
    + `${knownAll ? ` (${knownAll} of them known differences, which do not fail the check)` : ''}`);
  return total - identical - knownAll === 0 ? 0 : 1;
}

main().then((rc) => process.exit(rc), (err) => {
  console.error(`sdkdiff: ${err && err.stack ? err.stack : err}`);
  process.exit(2);
});
