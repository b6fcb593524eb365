#!/usr/bin/env node
'use strict';
// The official Alibaba Cloud Node.js SDK core (@alicloud/openapi-client, pinned
// in package.json / package-lock.json), timed over the canned ListBindings pages
// that bench/run.py serves with nginx on loopback.
//
//   node bench.js --url http://127.0.0.1:PORT [--ca CA.crt] [--page-size 100]
//                 [--seconds 3] [--warmup 200] [--check]
//
// ListBindings goes through callApi exactly as the generated @alicloud/imm20200930
// client's listBindingsWithOptions sends it: RPC style, POST, the parameters in
// the query, V3 signature (ACS3-HMAC-SHA256, the SDK's default). One call at a
// time, following NextToken to the end of the chain, then again from page 1.
//
// keepAlive: RuntimeOptions.keepAlive is set to true as asked, but 0.4.15's
// doRequest does not pass it on to @alicloud/tea-typescript; the requests go
// through httpx's module-level agents, which are keepAlive: true, so each run
// uses one connection (bench/run.py checks the count with nginx's stub_status).
//
// Prints one JSON line: calls, bindings, wall and cpu seconds (process CPU,
// user + system, of the timed part only), peak and current RSS in KiB.

const fs = require('fs');

const OpenApi = require('@alicloud/openapi-client');
const OpenApiUtil = require('@alicloud/openapi-util').default;
const $Util = require('@alicloud/tea-util');

function parseArgs(argv) {
  const o = { pageSize: 100, seconds: 3, warmup: 200, check: false, project: 'immtest' };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    const next = () => { i += 1; if (i >= argv.length) throw new Error(`${a} needs a value`); return argv[i]; };
    if (a === '--url') o.url = next();
    else if (a === '--ca') o.ca = next();
    else if (a === '--page-size') o.pageSize = Number(next());
    else if (a === '--seconds') o.seconds = Number(next());
    else if (a === '--warmup') o.warmup = Number(next());
    else if (a === '--check') o.check = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.url || !/^https?:\/\/[^/]+$/.test(o.url)) throw new Error('--url http(s)://HOST:PORT is required');
  return o;
}

function status(field) {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : null;
}

function makeClient(o) {
  const u = new URL(o.url);
  const config = new OpenApi.Config({
    accessKeyId: 'bench-id',
    accessKeySecret: 'bench-secret',
    regionId: 'cn-hangzhou',
    endpoint: u.host,
    protocol: u.protocol.replace(':', ''),
    readTimeout: 10000,
    connectTimeout: 5000,
  });
  if (o.ca) config.ca = fs.readFileSync(o.ca, 'utf8');
  return new OpenApi.default(config);
}

// As in the generated @alicloud/imm20200930 listBindingsWithOptions.
async function listBindings(client, runtime, request) {
  const query = {};
  query.ProjectName = request.ProjectName;
  query.MaxResults = request.MaxResults;
  if (request.NextToken) query.NextToken = request.NextToken;
  const req = new OpenApi.OpenApiRequest({ query: OpenApiUtil.query(query) });
  const params = new OpenApi.Params({
    action: 'ListBindings',
    version: '2020-09-30',
    protocol: 'HTTPS',
    pathname: '/',
    method: 'POST',
    authType: 'AK',
    style: 'RPC',
    reqBodyType: 'formData',
    bodyType: 'json',
  });
  return client.callApi(params, req, runtime);
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const client = makeClient(o);
  const runtime = new $Util.RuntimeOptions({ keepAlive: true, autoretry: false });

  let calls = 0;
  let bindings = 0;
  const pages = [];
  // One chain: page 1 to the last page.
  async function chain() {
    let token = '';
    do {
      const res = await listBindings(client, runtime, { ProjectName: o.project, MaxResults: o.pageSize, NextToken: token });
      if (res.statusCode !== 200 || !Array.isArray(res.body.Bindings)) {
        throw new Error(`unexpected reply: HTTP ${res.statusCode}`);
      }
      calls += 1;
      bindings += res.body.Bindings.length;
      if (o.check) pages.push({ n: res.body.Bindings.length, first: res.body.Bindings[0] && res.body.Bindings[0].URI, token });
      token = res.body.NextToken;
    } while (token);
  }

  if (o.check) {
    await chain();
    process.stdout.write(`${JSON.stringify({ check: true, calls, bindings, pages })}\n`);
    process.exit(0);
  }

  while (calls < o.warmup) await chain();
  calls = 0;
  bindings = 0;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const deadline = t0 + BigInt(Math.round(o.seconds * 1e9));
  do {
    await chain();
  } while (process.hrtime.bigint() < deadline);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(`${JSON.stringify({
    calls,
    bindings,
    wall,
    cpu: (cpu.user + cpu.system) / 1e6,
    hwm_kb: status('VmHWM'),
    rss_kb: status('VmRSS'),
    runtime: `node ${process.version}, @alicloud/openapi-client ${require('@alicloud/openapi-client/package.json').version}`,
  })}\n`);
  // The keep-alive agent would hold the process open until the socket idles out.
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`bench.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
