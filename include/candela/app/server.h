// `candela serve`: the app layer (candela/app/jobs.h) behind an HTTP API.
//
// The server turns JSON requests into the same jobs the CLI runs and serves the same artifacts.
// Explain and evaluate requests become queued jobs run by worker threads; their results are
// stored under `results` (one folder per result, written to a temporary folder and renamed),
// with one record per job, so a restart serves every finished result and reports unfinished
// jobs as interrupted. docs/api.md describes the endpoints.
//
//   ServerOptions o;
//   o.models = "models/"; o.port = 0;
//   serve(o);  // prints "candela: serving on http://127.0.0.1:PORT/" and blocks until `stop`
#pragma once

#include <cstdint>
#include <string>

#include "candela/core/progress.h"

namespace candela {

struct ServerOptions {
  std::string models;                        // model files (.pt, .onnx) with their sidecars
  std::string data;                          // samples (images, .npy, .csv); empty: none
  std::string results = "candela-results";   // result store and job records
  std::string static_dir;                    // files served at / (the web UI); empty: web/dist if present
  std::string host = "127.0.0.1";
  int port = 8080;                           // 0: an ephemeral port (the printed URL names it)
  std::string token;                         // empty: no authentication (loopback only)
  std::string cors;                          // allowed origin; empty: no CORS headers
  int workers = 1;                           // jobs run at once
  int queue = 64;                            // jobs waiting beyond the running ones; more: 429
  int threads = 0;                           // intra-op threads in all (split between workers); 0: all cores
  int http_threads = 32;                     // connections served at once (event streams hold one each)
  // Per-request limits: 413 past the upload size, 422 past the others.
  int64_t max_upload_bytes = 16 << 20;       // decoded bytes of an uploaded input
  int64_t max_steps = 4096;                  // n_steps, max_steps
  int64_t max_samples = 4096;                // n_samples, nt_samples, max_samples, ...
  int64_t max_rows = 256;                    // input rows per request
  int64_t max_eval_samples = 10000;          // samples an evaluation may use
  CancelToken stop;                          // cancel() stops the server (SIGINT, SIGTERM)
};

// Binds, prints the URL on stdout (one line), serves until options.stop is cancelled. Throws
// InvalidArgument for unsafe or impossible settings (a non-loopback host without a token, a
// missing models folder) and IoError when the port cannot be bound.
void serve(const ServerOptions& options);

// Whether `host` is a loopback address (127.0.0.0/8, ::1, localhost).
bool is_loopback_host(const std::string& host);

}  // namespace candela
