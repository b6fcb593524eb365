#!/usr/bin/env node
'use strict';
// The official Node.js SDK core (@alicloud/openapi-client, pinned in
// package-lock.json) lists a whole project once, timed in-process from client
// creation to the last binding. bench/latency/run.py runs it through the
// delaying proxy, with NODE_EXTRA_CA_CERTS naming the test CA (Node's own CA
// store plus that one).
//
//   node latency.js --url https://127.0.0.1:PORT --mode loop|fanout
//                   [--page-size 100 (0: no MaxResults)] [--dump FILE]
//
// loop:   ListBindings over the whole project, following NextToken: the SDK's
//         documented way, one request at a time.
// fanout: hand-written parallel listing: ListDatasets (every page), then
//         Promise.all over the datasets, each with its own NextToken loop of
//         ListBindings with DatasetName. All requests of a round are in flight
//         at once (httpx's agent has no socket limit).
// The requests go through callApi as the generated @alicloud/imm20200930
// client sends them (RPC, POST, parameters in the query, V3 signature); that
// package is not on the npm registry this project uses, so its two methods
// are written out here, as bench.js does.
//
// --dump FILE writes every URI received, one a line (the check run).
// Prints one JSON line: bindings, wall and cpu seconds, VmHWM in KiB.

const fs = require('fs');

const OpenApi = require('@alicloud/openapi-client');
const OpenApiUtil = require('@alicloud/openapi-util').default;
const $Util = require('@alicloud/tea-util');

function parseArgs(argv) {
  const o = { pageSize: 100, project: 'immtest', mode: 'loop' };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    const next = () => { i += 1; if (i >= argv.length) throw new Error(`${a} needs a value`); return argv[i]; };
    if (a === '--url') o.url = next();
    else if (a === '--mode') o.mode = next();
    else if (a === '--page-size') o.pageSize = Number(next());
    else if (a === '--dump') o.dump = next();
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.url || !/^https?:\/\/[^/]+$/.test(o.url)) throw new Error('--url http(s)://HOST:PORT is required');
  if (o.mode !== 'loop' && o.mode !== 'fanout') throw new Error('--mode is loop or fanout');
  return o;
}

function status(field) {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : null;
}

function makeClient(o) {
  const u = new URL(o.url);
  return new OpenApi.default(new OpenApi.Config({
    accessKeyId: 'bench-id',
    accessKeySecret: 'bench-secret',
    regionId: 'cn-hangzhou',
    endpoint: u.host,
    protocol: u.protocol.replace(':', ''),
    readTimeout: 30000,
    connectTimeout: 10000,
  }));
}

// As the generated listBindingsWithOptions / listDatasetsWithOptions send them.
function call(client, runtime, action, request) {
  const query = {};
  for (const k of Object.keys(request)) if (request[k] !== undefined && request[k] !== '') query[k] = request[k];
  const req = new OpenApi.OpenApiRequest({ query: OpenApiUtil.query(query) });
  const params = new OpenApi.Params({
    action,
    version: '2020-09-30',
    protocol: 'HTTPS',
    pathname: '/',
    method: 'POST',
    authType: 'AK',
    style: 'RPC',
    reqBodyType: 'formData',
    bodyType: 'json',
  });
  return client.callApi(params, req, runtime).then((res) => {
    if (res.statusCode !== 200) throw new Error(`${action}: HTTP ${res.statusCode}`);
    return res.body;
  });
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const seen = o.dump ? [] : null;
  let n = 0;
  const take = (list) => {
    if (!Array.isArray(list)) throw new Error('ListBindings: no Bindings array');
    n += list.length;
    if (seen) for (const b of list) seen.push(b.URI);
  };

  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const client = makeClient(o);
  const runtime = new $Util.RuntimeOptions({ keepAlive: true, autoretry: false });

  // One NextToken loop of ListBindings, over the project or one dataset.
  async function loop(dataset) {
    let token;
    do {
      const body = await call(client, runtime, 'ListBindings',
        { ProjectName: o.project, DatasetName: dataset, MaxResults: o.pageSize || undefined, NextToken: token });
      take(body.Bindings);
      token = body.NextToken;
    } while (token);
  }

  if (o.mode === 'loop') {
    await loop(undefined);
  } else {
    const names = [];
    let token;
    do {
      const body = await call(client, runtime, 'ListDatasets',
        { ProjectName: o.project, MaxResults: 100, NextToken: token });
      for (const d of body.Datasets) names.push(d.DatasetName);
      token = body.NextToken;
    } while (token);
    await Promise.all(names.map((name) => loop(name)));
  }

  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  if (seen) fs.writeFileSync(o.dump, `${seen.join('\n')}\n`);
  process.stdout.write(`${JSON.stringify({
    bindings: n,
    wall,
    cpu: (cpu.user + cpu.system) / 1e6,
    hwm_kb: status('VmHWM'),
    runtime: `node ${process.version}`,
  })}\n`);
  // The keep-alive agent would hold the process open until the sockets idle out.
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`latency.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
