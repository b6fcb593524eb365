'use strict';
// The calls that sdkdiff.js sends with both the official SDK core and imm.
//
// fullCases(api): one call per action of the API description, with every
// parameter filled from its type: strings (some with reserved and non-ASCII
// characters), numbers (integers, floats such as 0.7 and
// 0.30000000000000004, big integers such as 202405170000123, 1e-7, 1e+21,
// 1e+300, 5e-324, 123456789012345680000, -1.5e-9),
// booleans, nested models, maps, arrays of strings, numbers and objects, and
// nested empty arrays where the type is an array.  The values are a pure
// function of the description, so every run sends the same calls.
//
// realisticCases(): calls as a user writes them (28 of them). A call may carry
// a third element, `known`: the reason for a difference the project knows of,
// which is then reported but does not fail the check (none today).

const STRINGS = ['value', 'a+b/c=d&e f', "项目 ü*'()!~", 'line1\nline2', 'oss://bucket/dir/file.jpg', '', 'cr\r\nlf'];
const NUMBERS = [20, 0.7, 202405170000123, 0.30000000000000004, 1e-7, -3, 1e21, 1.5, 1e300, 5e-324,
  123456789012345680000, 1.23e-18, -1.5e-9];
const MAX_MODEL_DEPTH = 3;

function sampler(api) {
  let n = 0;       // one counter for the whole call: values vary from field to field
  let arrays = 0;  // every third array inside a JSON value is left empty
  const tick = () => { n += 1; return n; };

  // Where imm checks a documented rule before sending, the sample keeps to it:
  // MaxResults is an integer from 0 to 200, a binding URI is oss://bucket/prefix/,
  // and a required parameter is not empty.
  function scalar(type, name, inJson, required) {
    const i = tick();
    if (type === 'number') return name === 'MaxResults' && !inJson ? 100 : NUMBERS[i % NUMBERS.length];
    if (type === 'boolean') return i % 2 === 0;
    let s = STRINGS[i % STRINGS.length];
    if (name === 'URI') return `oss://bucket/dir-${i}/`;
    if (s === '' && required) s = 'value';
    return s === 'value' ? `${name}-${i}` : s;
  }

  // A value of TYPE; inJson: inside a JSON-encoded parameter.
  function value(type, name, stack, inJson, required) {
    if (typeof type === 'string') {
      if (type === 'any') {
        // "any" has no array/object shape to follow: never an empty table here.
        return inJson ? { Name: `${name}-${tick()}`, Count: scalar('number', name, true), On: true }
          : scalar('string', name, false, required);
      }
      return scalar(type, name, inJson, required);
    }
    if (type.array !== undefined) {
      arrays += 1;
      if (inJson && stack.length > 0 && arrays % 3 === 0) return [];
      const item = type.array;
      if (item.model !== undefined && stack.filter((m) => m === item.model).length >= 1) return [];
      return [value(item, name, stack, inJson), value(item, name, stack, inJson)];
    }
    if (type.map !== undefined) {
      return { key1: value(type.map, name, stack, inJson), 'key 2': value(type.map, name, stack, inJson) };
    }
    if (type.model !== undefined) {
      const model = api.models[type.model];
      if (!model) throw new Error(`model ${type.model} is not in the description`);
      const obj = {};
      if (stack.length >= MAX_MODEL_DEPTH) return obj;
      const inner = stack.concat([type.model]);
      for (const f of model.fields) {
        if (f.type.model !== undefined && inner.includes(f.type.model)) continue;  // recursive model
        obj[f.name] = value(f.type, f.name, inner, true);
      }
      return obj;
    }
    throw new Error(`unknown type ${JSON.stringify(type)}`);
  }

  return (action) => {
    n = 0; arrays = 0;
    const params = {};
    for (const p of api.actions[action].params) {
      params[p.name] = value(p.type, p.name, [], p.encoding === 'json', p.required === true);
    }
    return params;
  };
}

function fullCases(api) {
  const sample = sampler(api);
  return Object.keys(api.actions).sort().map((action) => ({ id: `full:${action}`, action, params: sample(action) }));
}

const P = 'immtest';
const D = 'dataset001';

function realisticCases() {
  const cases = [
    ['SemanticQuery', { ProjectName: P, DatasetName: D, Query: 'a dog on a beach', MaxResults: 10,
      MediaTypes: ['image', 'video'], WithFields: ['URI', 'Labels', 'Figures'] }],
    ['BatchGetFileMeta', { ProjectName: P, DatasetName: D,
      URIs: ['oss://bucket/a.jpg', 'oss://bucket/b c.jpg', 'oss://bucket/项.png'], WithFields: ['URI', 'Size'] }],
    ['CreateMediaConvertTask', { ProjectName: P,
      Sources: [{ URI: 'oss://bucket/in.mp4', StartTime: 0.5, Duration: 12.25, Subtitles: [] }],
      Targets: [{ URI: 'oss://bucket/out.mp4', Container: 'mp4', Speed: 1.5,
        Video: { TranscodeVideo: { Codec: 'h264', CRF: 23.5, FrameRate: 29.97, Bitrate: 2000000 } },
        Audio: { TranscodeAudio: { Codec: 'aac', Bitrate: 128000, SampleRate: 44100, Channel: 2 } },
        Segment: { Format: 'hls', Duration: 10 } }],
      Tags: { team: 'media', priority: 2 }, UserData: '{"id":202405170000123}' }],
    ['ContextualAnswer', { ProjectName: P, Messages: [
      { Role: 'user', Content: 'What is in the photo\nfrom the beach trip?' },
      { Role: 'assistant', Content: 'A dog running on the sand.', Files: [] },
      { Role: 'user', Content: 'And the one after it? ü & + =' }] }],
    ['ContextualRetrieval', { ProjectName: P, DatasetName: D, RecallOnly: true,
      Messages: [{ Role: 'user', Content: 'photos of my cat' }], SmartClusterIds: ['sc-1', 'sc-2'] }],
    ['CreateBinding', { ProjectName: P, DatasetName: D, URI: 'oss://examplebucket01' }],
    ['ListBindings', { ProjectName: P, DatasetName: D, MaxResults: 50, NextToken: 'immtest:dataset001:b' }],
    ['GetBinding', { ProjectName: P, DatasetName: D, URI: 'oss://examplebucket01' }],
    ['DeleteBinding', { ProjectName: P, DatasetName: D, URI: 'oss://examplebucket01' }],
    ['CreateProject', { ProjectName: 'proj-new', Description: 'demo', ProjectMaxDatasetCount: 10,
      DatasetMaxFileCount: 100000000, DatasetMaxTotalFileSize: 90000000000000, ServiceRole: 'AliyunIMMDefaultRole',
      Tag: [{ Key: 'env', Value: 'test' }, { Key: 'owner', Value: 'media team' }] }],
    ['ListProjects', { MaxResults: 20, Prefix: 'imm', Tag: [{ Key: 'env', Value: 'test' }] }],
    ['UpdateProject', { ProjectName: P, Description: 'updated', Tag: [] }],
    ['SimpleQuery', { ProjectName: P, DatasetName: D, MaxResults: 100, WithoutTotalHits: false,
      Query: { Operation: 'and', SubQueries: [
        { Field: 'Size', Operation: 'gt', Value: '1048576' },
        { Field: 'ContentType', Operation: 'prefix', Value: 'image/' }] },
      Aggregations: [{ Field: 'Size', Operation: 'sum' }], WithFields: ['URI', 'Size'] }],
    ['DetectImageLabels', { ProjectName: P, SourceURI: 'oss://bucket/a.jpg', Threshold: 0.7 }],
    ['CreateImageModerationTask', { ProjectName: P, SourceURI: 'oss://bucket/v.mp4', Interval: 2, MaxFrames: 200,
      Scenes: ['porn', 'terrorism'], Notification: { MNS: { TopicName: 'imm-topic' } } }],
    ['ListTasks', { ProjectName: P, MaxResults: 100, TaskTypes: ['MediaConvert', 'FileCompression'],
      StartTimeRange: { Start: '2024-05-01T00:00:00Z', End: '2024-05-17T00:00:00Z' }, RequestDefinition: true }],
    ['BatchGetFigureCluster', { ProjectName: P, DatasetName: D, ObjectIds: ['Cluster-1', 'Cluster-2'] }],
    ['QueryFigureClusters', { ProjectName: P, DatasetName: D, MaxResults: 50, WithTotalCount: true,
      CreateTimeRange: { Start: '2024-01-01T00:00:00Z', End: '2024-12-31T00:00:00Z' } }],
    ['CreateOfficeConversionTask', { ProjectName: P, SourceURI: 'oss://bucket/doc.docx', TargetType: 'png',
      TargetURIPrefix: 'oss://bucket/out/', StartPage: 1, EndPage: 5, ScalePercentage: 150, ImageDPI: 96,
      Sources: [{ URI: 'oss://bucket/a.docx', Rotate: 90 }],
      TrimPolicy: { DisableDeleteEmptyCell: true, DisableDeleteUnusedPicture: false } }],
    // no body parameter given: the SDK still sends an (empty) form body
    ['CreateOfficeConversionTask', { ProjectName: P, SourceURI: 'oss://bucket/slides.pptx', TargetType: 'jpg',
      TargetURIPrefix: 'oss://bucket/slides/', LongPicture: true, Quality: 80 }],
    ['CreateTrigger', { ProjectName: P, ServiceRole: 'AliyunIMMBatchTriggerRole',
      Input: { OSS: { Bucket: 'bucket', Prefix: 'in/', MatchExpressions: ['*.jpg', '*.png'] } },
      Actions: [{ Name: 'doc/convert', Parameters: ['target=png'], FastFailPolicy: { Action: 'abort' } }],
      Tags: { purpose: 'thumbnails' } }],
    ['CreateBatch', { ProjectName: P, ServiceRole: 'AliyunIMMBatchTriggerRole',
      Input: { OSS: { Bucket: 'bucket', Prefix: 'in/' } },
      Actions: [{ Name: 'image/detect', Parameters: [] }] }],
    ['DeleteLocationDateCluster', { ProjectName: P, DatasetName: D, ObjectId: 'location-date-cluster-1' }],
    ['CreateStory', { ProjectName: P, DatasetName: D, StoryType: 'PeopleMemory', StoryName: 'Summer 2024',
      MinFileCount: 5, MaxFileCount: 200, CustomLabels: { mood: 'happy' },
      Address: { Country: 'China', City: 'Hangzhou' } }],
    ['BatchIndexFileMeta', { ProjectName: P, DatasetName: D, UserData: 'batch-1',
      Files: [{ URI: 'oss://bucket/a.jpg', CustomLabels: { score: 0.7, id: 202405170000123 }, Figures: [] },
        { URI: 'oss://bucket/b.jpg', MediaType: 'image', Labels: [{ LabelName: 'cat', LabelConfidence: 0.93 }] }] }],
    ['UpdateFileMeta', { ProjectName: P, DatasetName: D,
      File: { URI: 'oss://bucket/a.jpg', CustomLabels: { rating: 4.5 }, Addresses: [] } }],
    ['GenerateWebofficeToken', { ProjectName: P, SourceURI: 'oss://bucket/doc.docx', Filename: 'doc.docx',
      Permission: { Readonly: true, Rename: false, History: true },
      User: { Id: 'u-1', Name: 'Ann' }, Watermark: { Type: 1, Value: 'confidential', Rotate: -0.7854,
        Vertical: 100, Horizontal: 50, FillStyle: 'rgba(192,192,192,0.6)' }, PreviewPages: 3 }],
    // CR and LF in a query value: the SDK sends them percent-encoded
    ['DetectTextAnomaly', { ProjectName: P, Content: 'first line\r\nsecond line\n' }],
  ];
  return cases.map(([action, params, known], i) => ({ id: `real:${i + 1}:${action}`, action, params, known }));
}

// headerCases(): a few realistic calls again with extra request headers (imm's
// call option `headers`, the SDK's OpenApiRequest.headers): a W3C traceparent,
// which both sides send unsigned, and an x-acs-* header, which both sign.
const EXTRA_HEADERS = { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
  'x-acs-trace-id': 'trace 1/2' };

function headerCases() {
  return realisticCases().slice(0, 4).map((c) => Object.assign({}, c, {
    id: c.id.replace(/^real:/, 'headers:'), headers: EXTRA_HEADERS }));
}

module.exports = { fullCases, realisticCases, headerCases, EXTRA_HEADERS, NUMBERS, STRINGS };
