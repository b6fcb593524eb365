'use strict';
// A loopback HTTP server that records each request it gets and answers a minimal
// valid IMM reply ({"RequestId": ...}, HTTP 200, application/json), so that two
// clients can send the same call to it and their requests can be compared.
//
// Each record: { method, path, action, query, contentType, body, json, bodyText,
// contentSha256, bodySha256, signedHeaders, headers }, where query and body are the decoded parameters
// (name -> string; the query with RFC 3986 rules, a form body with HTML form
// rules, where '+' is a space), json holds each parameter whose value is a JSON
// object or array, decoded by decodeJsonValue(), which keeps each number's text
// ({ $num: "0.7" }), so "0.7" and "0.69999999999999996" stay different; action
// is x-acs-action (V3) or the Action parameter (V2); the two hashes let a check
// see that the V3 content hash covers the body.
//
//   const rec = await require('./recorder').start();   // rec.port, rec.records
//   ...; rec.clear(); ...; await rec.close();
//
//   node recorder.js [PORT]      standalone: prints one JSON line per request
//
// Listens on 127.0.0.1 only.  CommonJS, Node >= 18.

const http = require('http');
const crypto = require('crypto');

function decodeQuery(raw) {
  const out = {};
  for (const piece of raw.split('&')) {
    if (!piece) continue;
    const i = piece.indexOf('=');
    const k = i < 0 ? piece : piece.slice(0, i);
    const v = i < 0 ? '' : piece.slice(i + 1);
    out[decodeURIComponent(k)] = decodeURIComponent(v);
  }
  return out;
}

function decodeForm(raw) {
  const out = {};
  for (const [k, v] of new URLSearchParams(raw)) out[k] = v;
  return out;
}

function record(req, bodyBuf) {
  const url = req.url || '/';
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const query = q < 0 ? {} : decodeQuery(url.slice(q + 1));
  const contentType = req.headers['content-type'] || null;
  const bodyText = bodyBuf.toString('utf8');
  const isForm = contentType !== null && /^application\/x-www-form-urlencoded/i.test(contentType);
  const body = isForm ? decodeForm(bodyText) : null;
  // Each parameter whose value is a JSON object or array, decoded (numbers as their text).
  const json = {};
  for (const [k, v] of Object.entries(Object.assign({}, query, body || {}))) {
    if (/^\s*[[{]/.test(v)) {
      try { json[k] = decodeJsonValue(v); } catch (e) { /* not JSON: stays a plain value */ }
    }
  }
  return {
    method: req.method,
    path,
    action: req.headers['x-acs-action'] || query.Action || (isForm ? decodeForm(bodyText).Action : undefined) || null,
    query,
    contentType,
    body,
    json,
    bodyText,
    contentSha256: req.headers['x-acs-content-sha256'] || null,
    // V3: the names the signature covers; every header, for the extra ones
    signedHeaders: (/SignedHeaders=([^,]*)/.exec(req.headers.authorization || '') || [])[1] || null,
    headers: Object.assign({}, req.headers),
    bodySha256: crypto.createHash('sha256').update(bodyBuf).digest('hex'),
  };
}

function start(port) {
  const records = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let rec;
      try {
        rec = record(req, Buffer.concat(chunks));
      } catch (err) {
        rec = { error: String(err && err.message) };
      }
      records.push(rec);
      if (server.onRecord) server.onRecord(rec);
      const id = crypto.randomUUID().toUpperCase();
      const body = Buffer.from(JSON.stringify({ RequestId: id }));
      res.writeHead(200, { 'Content-Type': 'application/json;charset=utf-8', 'Content-Length': body.length,
        'x-acs-request-id': id });
      res.end(body);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port || 0, '127.0.0.1', () => {
      resolve({
        port: server.address().port,
        records,
        clear() { records.length = 0; },
        close() {
          return new Promise((done) => { server.close(() => done()); server.closeAllConnections(); });
        },
        set onRecord(fn) { server.onRecord = fn; },
      });
    });
  });
}

// JSON with each number kept as its text: { $num: "0.7" }.  Throws on bad JSON.
function decodeJsonValue(text) {
  let i = 0;
  const ws = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i += 1; };
  const fail = (what) => { throw new Error(`bad JSON at ${i}: ${what}`); };
  function value() {
    ws();
    const c = text[i];
    if (c === '{') {
      i += 1; const obj = {}; ws();
      if (text[i] === '}') { i += 1; return obj; }
      for (;;) {
        ws(); if (text[i] !== '"') fail('expected a key');
        const k = str(); ws(); if (text[i] !== ':') fail('expected :'); i += 1;
        obj[k] = value(); ws();
        if (text[i] === ',') { i += 1; continue; }
        if (text[i] === '}') { i += 1; return obj; }
        fail('expected , or }');
      }
    }
    if (c === '[') {
      i += 1; const arr = []; ws();
      if (text[i] === ']') { i += 1; return arr; }
      for (;;) {
        arr.push(value()); ws();
        if (text[i] === ',') { i += 1; continue; }
        if (text[i] === ']') { i += 1; return arr; }
        fail('expected , or ]');
      }
    }
    if (c === '"') return str();
    const m = /^(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)/.exec(text.slice(i));
    if (!m) fail('unexpected character');
    i += m[0].length;
    if (m[0] === 'true') return true;
    if (m[0] === 'false') return false;
    if (m[0] === 'null') return null;
    return { $num: m[0] };
  }
  function str() {
    const m = /^"(?:[^"\\\u0000-\u001f]|\\.)*"/.exec(text.slice(i));
    if (!m) fail('bad string');
    i += m[0].length;
    return JSON.parse(m[0]);
  }
  const v = value(); ws();
  if (i !== text.length) fail('trailing text');
  return v;
}

module.exports = { start, decodeJsonValue, decodeQuery, decodeForm };

if (require.main === module) {
  start(Number(process.argv[2] || 0)).then((rec) => {
    console.error(`recorder: listening on 127.0.0.1:${rec.port}`);
    rec.onRecord = (r) => console.log(JSON.stringify(r));
  });
}
