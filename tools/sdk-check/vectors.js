#!/usr/bin/env node
'use strict';
// Prints signing vectors for requests with an x-www-form-urlencoded body, computed
// by the official @alicloud/openapi-util (pinned in package.json), in the format
// of spec/fixtures/signing.json plus, per case:
//   form  the parameters that travel in the body (name -> string)
//   body  the body text, as the official core writes it (OpenApiUtil.toForm for
//         V3, Util.toFormString(OpenApiUtil.query(...)) for V2)
// V3: x-acs-content-sha256 is the hash of that body and content-type is signed;
// V2: the body parameters are in the signed set, as doRPCRequest signs them.
//
//   node tools/sdk-check/vectors.js > spec/fixtures/signing_body.json
//
// canonical_request and string_to_sign are what getAuthorization itself hashed
// and signed (read by wrapping OpenApiUtil.hash, signatureMethod and, for V2,
// kitx.sha1), not a copy
// of its rules.

const path = require('path');
const OpenApiUtil = require('@alicloud/openapi-util').default;
const Util = require('@alicloud/tea-util').default;

const KEY_ID = 'LTAI_test_id';
const SECRET = 'test_secret';
const HOST = 'imm.cn-hangzhou.aliyuncs.com';
const DATE = '2024-01-02T03:04:05Z';
const NONCE = '3d3f7a7ab2a54f5fa43a2c8f1c5ebd00';
const FORM_TYPE = 'application/x-www-form-urlencoded';

// getAuthorization hashes the canonical request and signs the string to sign
// through these two statics; wrap them to keep what they were given.
let seen = {};
const hash = OpenApiUtil.hash;
const signatureMethod = OpenApiUtil.signatureMethod;
OpenApiUtil.hash = function (raw, algorithm) {
  seen.hashed = Buffer.from(raw).toString('utf8');
  return hash.call(this, raw, algorithm);
};
// getRPCSignature signs its string to sign with kitx.sha1 (the copy it loads).
const kitx = require(require.resolve('kitx', { paths: [path.dirname(require.resolve('@alicloud/openapi-util'))] }));
const kitxSha1 = kitx.sha1;
kitx.sha1 = function (data, key, encoding) {
  seen.rpc = String(data);
  return kitxSha1.call(this, data, key, encoding);
};
OpenApiUtil.signatureMethod = function (secret, source, algorithm) {
  seen.signed = String(source);
  return signatureMethod.call(this, secret, source, algorithm);
};

function v3(name, algorithm, action, query, form, token) {
  const body = OpenApiUtil.toForm(form);
  const headers = {
    host: HOST,
    'x-acs-action': action,
    'x-acs-version': '2020-09-30',
    'x-acs-date': DATE,
    'x-acs-signature-nonce': NONCE,
  };
  if (token) {
    headers['x-acs-accesskey-id'] = KEY_ID;
    headers['x-acs-security-token'] = token;
  }
  headers['x-acs-content-sha256'] = OpenApiUtil.hexEncode(OpenApiUtil.hash(Util.toBytes(body), algorithm));
  headers['content-type'] = FORM_TYPE;
  seen = {};
  const authorization = OpenApiUtil.getAuthorization({ pathname: '/', method: 'POST', query, headers },
    algorithm, headers['x-acs-content-sha256'], KEY_ID, SECRET);
  return {
    name, algorithm, method: 'POST', path: '/', query, form, body, headers,
    canonical_request: seen.hashed, string_to_sign: seen.signed, authorization,
  };
}

function v2(name, action, query, form, token) {
  const params = Object.assign({
    Action: action, Version: '2020-09-30', Format: 'JSON', AccessKeyId: KEY_ID,
    SignatureMethod: 'HMAC-SHA1', SignatureVersion: '1.0', SignatureNonce: NONCE, Timestamp: DATE,
  }, token ? { SecurityToken: token } : {}, query);
  // doRPCRequest: the body is toFormString(query(body)); the signed set is
  // the query merged with query(body).
  const body = Util.toFormString(Util.anyifyMapValue(OpenApiUtil.query(form)));
  const signed = Object.assign({}, params, OpenApiUtil.query(form));
  seen = {};
  const signature = OpenApiUtil.getRPCSignature(signed, 'POST', SECRET);
  if (seen.rpc === undefined) throw new Error(`${name}: getRPCSignature did not go through kitx.sha1`);
  const stringToSign = seen.rpc;
  return { name, method: 'POST', params: signed, form, body, string_to_sign: stringToSign, signature };
}

const MESSAGES = '[{"Content":"What is in the photo?","Role":"user"}]';
const STORY = { DatasetName: 'dataset001', MinFileCount: '5', ProjectName: 'immtest', StoryName: 'Summer 2024',
  StoryType: 'PeopleMemory' };
const RESERVED = { Messages: "[{\"Content\":\"it's (really) *fine*! ü 项目 a+b=c&d\",\"Role\":\"user\"}]" };

const doc = {
  note: `Computed by the official @alicloud/openapi-util ${require('@alicloud/openapi-util/package.json').version} `
    + `(tools/sdk-check/vectors.js). AccessKeyId ${KEY_ID}, secret ${SECRET}. Method POST, path /, `
    + 'parameters in an x-www-form-urlencoded body: "form" holds them, "body" is the body text the official '
    + 'core writes. V3 signs content-type and hashes the body; V2 signs the body parameters with the query ones.',
  access_key_id: KEY_ID,
  access_key_secret: SECRET,
  v3: [
    v3('form-and-query', 'ACS3-HMAC-SHA256', 'ContextualAnswer', { ProjectName: 'immtest' }, { Messages: MESSAGES }),
    v3('form-only', 'ACS3-HMAC-SHA256', 'CreateStory', {}, STORY),
    v3('form-reserved-and-unicode', 'ACS3-HMAC-SHA256', 'ContextualAnswer', { ProjectName: 'proj' }, RESERVED),
    v3('form-empty', 'ACS3-HMAC-SHA256', 'DeleteLocationDateCluster', { ProjectName: 'immtest', DatasetName: 'dataset001' }, {}),
    v3('form-sts-token', 'ACS3-HMAC-SHA256', 'ContextualAnswer', { ProjectName: 'immtest' }, { Messages: MESSAGES },
      'CAIS+token/with=chars'),
    v3('form-sm3', 'ACS3-HMAC-SM3', 'CreateStory', {}, STORY),
  ],
  v2: [
    v2('form-and-query', 'ContextualAnswer', { ProjectName: 'immtest' }, { Messages: MESSAGES }),
    v2('form-only', 'CreateStory', {}, STORY),
    v2('form-reserved-and-unicode', 'ContextualAnswer', { ProjectName: 'proj' }, RESERVED),
    v2('form-sts-token', 'ContextualAnswer', { ProjectName: 'immtest' }, { Messages: MESSAGES }, 'CAIS+token/with=chars'),
  ],
};

process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
