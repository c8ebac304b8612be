// Drives the kling-audit simulator with the third-party npm client `kling-api` 1.0.0, the way a
// real application would, and prints one JSON document with what happened.
//
// Environment: SIM_BASE_URL (http://127.0.0.1:<port>), SIM_ACCESS_KEY, SIM_SECRET_KEY.
// The client insists on an https base URL, so it is built with the production URL and then
// pointed at the simulator through its exposed axios instance, the route this client offers for
// a non-https base URL.

import { KlingAPI } from 'kling-api';

const base = process.env.SIM_BASE_URL;
const accessKey = process.env.SIM_ACCESS_KEY;
const secretKey = process.env.SIM_SECRET_KEY;
if (!base || !accessKey || !secretKey) {
  console.error('SIM_BASE_URL, SIM_ACCESS_KEY and SIM_SECRET_KEY must be set');
  process.exit(2);
}

function client(secret) {
  const api = new KlingAPI({
    accessKey,
    secretKey: secret,
    baseUrl: 'https://api-singapore.klingai.com',
    timeout: 10000,
  });
  api.client.defaults.baseURL = base;
  return api;
}

function describeError(e) {
  return {
    name: e?.name ?? null,
    message: e?.message ?? String(e),
    code: e?.code ?? null,
    httpStatus: e?.httpStatus ?? null,
    requestId: e?.requestId ?? null,
  };
}

const out = {};

const api = client(secretKey);
try {
  const created = await api.textToVideo({
    prompt: 'A paper boat drifting down a rainy street',
    model_name: 'kling-v1',
    mode: 'std',
    duration: '5',
    aspect_ratio: '16:9',
  });
  out.create = {
    code: created.code,
    message: created.message,
    request_id: created.request_id ?? null,
    task_id: created.data?.task_id ?? null,
    task_status: created.data?.task_status ?? null,
  };
  const done = await api.waitForVideoResult(out.create.task_id, undefined, {
    interval: 100,
    timeout: 30000,
    showSpinner: false,
  });
  const videos = done.data?.task_result?.videos ?? [];
  out.final = {
    code: done.code,
    task_id: done.data?.task_id ?? null,
    task_status: done.data?.task_status ?? null,
    videos: videos.length,
    has_url: videos.some((v) => typeof v.url === 'string' && v.url.length > 0),
    final_unit_deduction: done.data?.final_unit_deduction ?? null,
  };
} catch (e) {
  out.error = describeError(e);
}

// A wrong secret key: the simulator must refuse the signature.
try {
  const created = await client(secretKey + '-wrong').textToVideo({
    prompt: 'This request must be refused',
    model_name: 'kling-v1',
  });
  out.wrong_secret = { refused: false, code: created.code ?? null };
} catch (e) {
  out.wrong_secret = { refused: true, ...describeError(e) };
}

console.log(JSON.stringify(out));
