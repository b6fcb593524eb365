#!/usr/bin/env node
'use strict';
// Every action of api/imm-2020-09-30.json, called with the official SDK core
// against the local IMM server, as the generated @alicloud/imm20200930 client
// calls it (the same emulation of its xxxWithOptions methods as sdkdiff.js:
// @alicloud/openapi-core's callApi with an RPC Params; that package is not on
// the registry this project installs from, so its models are not here).
//
//   node actions.js HOST:PORT [ACCESS_KEY_ID ACCESS_KEY_SECRET] [-v]
//
// Checked per action: HTTP 200, and every field the description lists as a
// response field is in the body. The description records response field
// names, not types; where it gives a kind (a paging action's list field, and
// its NextToken) the field must be of that JSON kind. This is the closest
// check possible without the SDK's models, which would also check each
// field's own type. NextToken may be absent (the last page has none).
// The calls run in an order that makes each one find what it names: the
// resources are made first (by earlier calls, or /_imm/records for clusters),
// read and changed, then deleted.
//
// Prints one line per failing (or, with -v, every) action and
// "actions: N actions: M answered, K failed"; exits 1 if any failed.

const fs = require('fs');
const http = require('http');
const path = require('path');

const OpenApi = require('@alicloud/openapi-core').default;
const { OpenApiUtil, $OpenApiUtil } = require('@alicloud/openapi-core');
const $dara = require('@darabonba/typescript');

const root = path.resolve(__dirname, '..', '..');
const api = JSON.parse(fs.readFileSync(path.join(root, 'api', 'imm-2020-09-30.json'), 'utf8'));
const endpoint = String(process.argv[2] || '').replace(/^https?:\/\//, '');
const VERBOSE = process.argv.includes('-v');
const positional = process.argv.slice(2).filter((a) => a !== '-v');
const keyId = positional[1] || 'imm-local-id';
const secret = positional[2] || 'imm-local-secret';
if (!/^[^/\s]+:\d+$/.test(endpoint)) {
  console.error('usage: node actions.js HOST:PORT [-v]');
  process.exit(2);
}
const [host, port] = [endpoint.slice(0, endpoint.lastIndexOf(':')), Number(endpoint.slice(endpoint.lastIndexOf(':') + 1))];

const P = 'immtest';
const D = 'dataset001';

function control(method, pathname, payload) {
  const body = payload === undefined ? '' : JSON.stringify(payload);
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path: pathname, agent: false, timeout: 10000,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) return reject(new Error(`${method} ${pathname}: HTTP ${res.statusCode} ${text}`));
        resolve(JSON.parse(text));
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

const client = new OpenApi(new $OpenApiUtil.Config({
  accessKeyId: keyId, accessKeySecret: secret, regionId: 'cn-hangzhou',
  endpoint, protocol: 'http', readTimeout: 10000, connectTimeout: 5000,
}));

// What a generated xxxWithOptions(request, runtime) does (as in sdkdiff.js).
function send(action, values) {
  const spec = api.actions[action];
  const query = {};
  const body = {};
  for (const p of spec.params) {
    if (values[p.name] === undefined) continue;
    let v = values[p.name];
    if (p.encoding === 'json') v = OpenApiUtil.arrayToStringWithSpecifiedStyle(v, p.name, 'json');
    (p.in === 'body' ? body : query)[p.name] = v;
  }
  const req = {};
  if (spec.params.some((p) => p.in === 'query')) req.query = OpenApiUtil.query(query);
  if (spec.params.some((p) => p.in === 'body')) req.body = OpenApiUtil.parseToMap(body);
  const params = new $OpenApiUtil.Params({
    action, version: '2020-09-30', protocol: 'HTTPS', pathname: spec.path || '/',
    method: spec.method || 'POST', authType: 'AK', style: 'RPC', reqBodyType: 'formData', bodyType: 'json',
  });
  return client.callApi(params, new $OpenApiUtil.OpenApiRequest(req), new $dara.RuntimeOptions({ autoretry: false }));
}

// A value of a described type with every required field, kept plain.
function sample(type, name, depth) {
  if (typeof type === 'string') {
    if (type === 'number') return 1;
    if (type === 'boolean') return true;
    return name && /URI$/.test(name) ? 'oss://bucket/object.jpg' : `${name || 'value'}-1`;
  }
  if (type.array !== undefined) return depth > 3 ? [] : [sample(type.array, name, depth + 1)];
  if (type.map !== undefined) return { k: sample(type.map, name, depth + 1) };
  const model = api.models[type.model];
  const obj = {};
  if (depth > 3) return obj;
  for (const f of model.fields) if (f.required) obj[f.name] = sample(f.type, f.name, depth + 1);
  return obj;
}

// The context the calls share: ids made by earlier calls.
const ctx = { TaskId: {}, Id: {} };

function paramsFor(action) {
  const out = {};
  for (const p of api.actions[action].params) {
    if (p.required) out[p.name] = p.encoding === 'scalar' && p.type === 'number' ? 1 : sample(p.type, p.name, 0);
  }
  const names = new Set(api.actions[action].params.map((p) => p.name));
  const fixed = {
    ProjectName: P, DatasetName: D, AcceptLanguage: 'en', OSSBucket: 'sdk-check-bucket', MaxResults: undefined,
    StoryType: 'TimeMemory', TargetType: 'pdf', CompressMethod: 'octree', ServiceRole: 'AliyunIMMDefaultRole',
  };
  for (const [k, v] of Object.entries(fixed)) if (names.has(k) && (k in out || k === 'DatasetName')) out[k] = v;
  if (names.has('URI') && /Binding$/.test(action)) out.URI = 'oss://sdk-check-bucket/';
  if (names.has('Id')) out.Id = ctx.Id[action.replace(/^(Get|Update|Suspend|Resume|Delete)/, '')];
  if (names.has('TaskId')) { out.TaskId = ctx.TaskId.id; out.TaskType = ctx.TaskId.type; }
  if (names.has('ObjectId') && /Story/.test(action) && !/^Create/.test(action)) out.ObjectId = ctx.story;
  if (names.has('ObjectId') && /FigureCluster/.test(action)) out.ObjectId = 'sdk-check-cluster';
  if (names.has('ObjectId') && /LocationDateCluster/.test(action)) out.ObjectId = 'sdk-check-ld';
  if (names.has('ObjectIds')) out.ObjectIds = ['sdk-check-cluster'];
  if (names.has('FigureCluster')) out.FigureCluster = { ObjectId: 'sdk-check-cluster', Name: 'n' };
  if (names.has('To')) out.To = 'sdk-check-cluster';
  if (action === 'CreateDataset' || action === 'DeleteDataset') out.DatasetName = 'sdk-check-dataset';
  if (action === 'CreateProject' || action === 'DeleteProject') out.ProjectName = 'sdk-check-project';
  if (names.has('File') && action !== 'IndexFileMeta') out.File = { URI: 'oss://bucket/object.jpg' };
  if (names.has('URIs')) out.URIs = ['oss://bucket/object.jpg'];
  if (names.has('URI') && /FileMeta/.test(action)) out.URI = 'oss://bucket/object.jpg';
  return out;
}

// Order: makers first, then the rest, then the deleters (each resource's last).
function order(actions) {
  const rank = (a) => {
    if (/^(Create|Attach|Index|BatchIndex)/.test(a)) return 0;
    if (/^(Delete|Detach|BatchDelete)/.test(a)) return a === 'DeleteDataset' || a === 'DeleteProject' ? 3 : 2;
    return 1;
  };
  return actions.slice().sort((x, y) => rank(x) - rank(y) || (x < y ? -1 : x > y ? 1 : 0));
}

function kindOf(v) {
  return Array.isArray(v) ? 'array' : v === null ? 'null' : typeof v;
}

async function main() {
  await control('POST', '/_imm/reset');
  await control('POST', '/_imm/settings', { task_delay: 0 });
  await control('POST', '/_imm/records', {
    FigureClusters: [{ ProjectName: P, DatasetName: D, ObjectId: 'sdk-check-cluster' }],
    LocationDateClusters: [{ ProjectName: P, DatasetName: D, ObjectId: 'sdk-check-ld' }],
    SimilarImageClusters: [{ ProjectName: P, DatasetName: D, ObjectId: 'sdk-check-sim' }],
  });
  const names = order(Object.keys(api.actions));
  let answered = 0; let failed = 0;
  for (const action of names) {
    const spec = api.actions[action];
    const params = paramsFor(action);
    let res;
    try {
      res = await send(action, params);
    } catch (err) {
      const status = err.statusCode || (err.data && err.data.statusCode);
      failed += 1;
      console.log(`FAIL ${action}: ${err.code || ''} HTTP ${status}: ${String(err.message).slice(0, 200)}`);
      continue;
    }
    const body = res.body || {};
    const problems = [];
    if (res.statusCode !== 200) problems.push(`HTTP ${res.statusCode}`);
    const paging = spec.response.paging;
    for (const f of spec.response.fields) {
      if (!(f in body)) {
        // SimpleQuery answers Aggregations only when the request asked for them
        const conditional = action === 'SimpleQuery' && f === 'Aggregations' && !('Aggregations' in params);
        if (!(paging && f === paging.token) && !conditional) problems.push(`no ${f}`);
        continue;
      }
      let want = f === 'RequestId' ? 'string' : null;
      if (paging && f === paging.list) want = 'array';
      if (paging && f === paging.token) want = 'string';
      if (want && kindOf(body[f]) !== want) problems.push(`${f} is ${kindOf(body[f])}, not ${want}`);
    }
    if (/^Create.*Task$/.test(action) && body.TaskId) ctx.TaskId = { id: body.TaskId, type: body.TaskId.split('-')[0] };
    if (body.Id && /^Create(Trigger|Batch)$/.test(action)) ctx.Id[action.replace(/^Create/, '')] = body.Id;
    if (action === 'CreateCustomizedStory' && body.ObjectId) ctx.story = body.ObjectId;
    if (problems.length) {
      failed += 1;
      console.log(`FAIL ${action}: ${problems.join('; ')}`);
    } else {
      answered += 1;
      if (VERBOSE) console.log(`ok   ${action}: ${spec.response.fields.length} fields`);
    }
  }
  console.log(`actions: ${names.length} actions: ${answered} answered with every response field, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main().catch((err) => { console.error(`actions: ${err.stack || err}`); process.exit(2); });
