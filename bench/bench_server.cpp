// `candela serve` under measurement (issue 14), resnet18 224x224, one image:
//   1. overhead per request: an explain through HTTP (POST, wait for `done` on the event stream,
//      fetch the values) against the library call the server makes (run(ExplainJob), artifacts
//      in memory), alternating in the same run; Grad-CAM and integrated gradients;
//   2. load: C clients posting Grad-CAM explains for S seconds, each waiting for its job before
//      the next: errors other than 429, lost jobs, throughput, p50/p99 latency, the server's peak
//      memory; with 1 worker and with W workers;
//   3. cached results: p50/p99 of fetching a finished result's values and of a cache-hit POST.
//
//   build/bin/bench_server [--threads N] [--repeats R] [--clients C] [--seconds S] [--workers W] [--parts 123]
//
// Every request differs from the others by the heatmap's opacity (alpha), which changes the key
// but not the explanation, so no request of parts 1 and 2 is a cache hit.
#include <ATen/Parallel.h>
#include <httplib.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "candela/app/jobs.h"

using namespace candela;
using namespace candela::bench;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct Server {
  pid_t pid = -1;
  int port = 0;
  Server(const fs::path& root, int threads, int workers, int queue) {
    std::vector<std::string> args = {CANDELA_CLI_PATH,
                                     "--threads",
                                     std::to_string(threads),
                                     "serve",
                                     "--models",
                                     (root / "models").string(),
                                     "--data",
                                     (root / "data").string(),
                                     "--results",
                                     (root / ("results-" + std::to_string(workers))).string(),
                                     "--port",
                                     "0",
                                     "--workers",
                                     std::to_string(workers),
                                     "--queue",
                                     std::to_string(queue),
                                     "--http-threads",
                                     "160"};
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe");
    pid = fork();
    if (pid == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      close(out[1]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    std::string line;
    char c;
    while (read(out[0], &c, 1) == 1 && c != '\n') line += c;
    close(out[0]);
    const auto at = line.find("http://127.0.0.1:");
    if (at == std::string::npos) throw std::runtime_error("the server printed no URL: " + line);
    port = std::stoi(line.substr(at + 17));
  }
  ~Server() {
    kill(pid, SIGTERM);
    waitpid(pid, nullptr, 0);
  }
  // Peak resident memory (VmHWM) in MB.
  double peak_mb() const {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);)
      if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
    return -1;
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(std::chrono::minutes(10));
    return c;
  }
};

std::atomic<int64_t> g_unique{0};

json request(const std::string& method) {
  json r = {{"model", "resnet18.pt"}, {"input", {{"data", "sample.png"}}}, {"method", method}};
  if (method == "grad_cam") r["layers"] = {"layer4"};
  if (method == "integrated_gradients") r["options"] = {{"n_steps", 32}};
  r["alpha"] = 0.5 + 1e-9 * static_cast<double>(++g_unique);  // a new key, the same explanation
  return r;
}

// POST, wait for the terminal event, fetch the values. Returns the HTTP status of the POST (and
// 0 when the job did not end `done`).
int explain_over_http(httplib::Client& c, const json& body, std::string* key = nullptr) {
  auto r = c.Post("/api/explain", body.dump(), "application/json");
  if (!r) return -1;
  if (r->status != 202 && r->status != 200) return r->status;
  const json job = json::parse(r->body);
  const std::string id = job["id"];
  std::string events;
  c.Get(("/api/jobs/" + id + "/events").c_str(), [&](const char* d, size_t n) {
    events.append(d, n);
    return true;
  });
  if (events.find("event: done\n") == std::string::npos) return 0;
  const json done = json::parse(c.Get(("/api/jobs/" + id).c_str())->body);
  auto v = c.Get(("/api/results/" + done["result"].get<std::string>() + "/values").c_str());
  if (!v || v->status != 200 || v->body.empty()) return 0;
  if (key) *key = done["result"];
  return r->status;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}
double median(std::vector<double> v) { return percentile(std::move(v), 0.5); }

}  // namespace

int main(int argc, char** argv) {
  Args a = parse_args(argc, argv, 7,
                      "usage: bench_server [--threads N] [--repeats R] [--clients C] [--seconds S] [--workers W] "
                      "[--parts 123]\n"
                      "  1: one request through HTTP against the library call; 2: C clients for S seconds with 1\n"
                      "  and W workers; 3: cached-result latency.\n"
                      "  Defaults: every core, 7 repeats, 64 clients, 60 s, 2 workers, all parts.\n\n"
                      "example:\n  flock /tmp/candela-build.lock nice build/bin/bench_server --threads 2 --repeats 9 "
                      "--clients 64 --seconds 60\n");
  int clients = 64, seconds = 60, workers = 2;
  std::string parts = "123";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--parts") && i + 1 < argc) parts = argv[++i];
    if (!std::strcmp(argv[i], "--clients") && i + 1 < argc) clients = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--workers") && i + 1 < argc) workers = std::max(1, std::atoi(argv[++i]));
  }
  torch::jit::getProfilingMode() = false;  // as the CLI (and so the server) runs TorchScript
  char tmpl[] = "/tmp/candela-bench-server-XXXXXX";
  const fs::path root = mkdtemp(tmpl);
  fs::create_directories(root / "models");
  fs::create_directories(root / "data");
  fs::copy_file(fixture("resnet18.pt"), root / "models/resnet18.pt");
  fs::copy_file(fixture("resnet18.json"), root / "models/resnet18.json");
  fs::copy_file(fixture("sample_224.png"), root / "data/sample.png");
  std::printf("bench_server: resnet18 224x224, %d intra-op threads, %d repeats, %d clients x %d s\n", a.threads,
              a.repeats, clients, seconds);

  // ---- 1. overhead per request -------------------------------------------------------------
  if (parts.find('1') != std::string::npos) {
    Server server(root, a.threads, 1, 64);
    auto c = server.client();
    std::printf("\n1. one request: library run(ExplainJob) vs HTTP (POST + event stream + values), medians (and best)\n");
    std::printf("%-22s %10s %10s %10s\n", "method", "library s", "HTTP s", "overhead");
    for (const std::string method : {"grad_cam", "integrated_gradients"}) {
      ExplainJob job;
      job.model = (root / "models/resnet18.pt").string();
      job.input = (root / "data/sample.png").string();
      job.method = method;
      if (method == "grad_cam") job.layers = {"layer4"};
      if (method == "integrated_gradients") job.options = {{"n_steps", 32}};
      std::vector<double> lib, http, lib_method, http_method;
      for (int r = -1; r < a.repeats; ++r) {  // r = -1: warm-up, not counted
        auto t = Clock::now();
        ExplainResult res = run(job);
        const double tl = since(t);
        t = Clock::now();
        std::string key;
        const int status = explain_over_http(c, request(method), &key);
        const double th = since(t);
        if (status != 202) std::printf("  HTTP request failed: %d\n", status);
        if (r < 0) continue;
        lib.push_back(tl);
        http.push_back(th);
        // The method's own time (attribution.json's wall_seconds) in each process.
        lib_method.push_back(res.attribution.wall_seconds);
        http_method.push_back(json::parse(c.Get(("/api/results/" + key).c_str())->body)["wall_seconds"].get<double>());
      }
      const double l = median(lib), h = median(http);
      const double lm = *std::min_element(lib.begin(), lib.end()), hm = *std::min_element(http.begin(), http.end());
      std::printf("%-22s %10.3f %10.3f %+9.1f%%   best %.3f / %.3f (%+.1f%%); the method alone: %.3f / %.3f s\n",
                  method.c_str(), l, h, 100.0 * (h - l) / l, lm, hm, 100.0 * (hm - lm) / lm, median(lib_method),
                  median(http_method));
    }
  }

  // ---- 2. load -----------------------------------------------------------------------------
  if (parts.find('2') != std::string::npos) {
    std::printf("\n2. %d clients posting grad_cam explains for %d s (each waits for its job, then posts again)\n",
                clients, seconds);
    std::printf("%-8s %8s %8s %8s %8s %10s %8s %8s %9s\n", "workers", "done", "429", "errors", "lost", "jobs/s",
                "p50 s", "p99 s", "peak MB");
  }
  double one_worker = 0;
  for (int w : {1, workers}) {
    if (parts.find('2') == std::string::npos) break;
    if (w == workers && workers == 1 && one_worker > 0) break;
    Server server(root, a.threads, w, 64);
    std::atomic<int64_t> n429{0}, errors{0};
    std::mutex mu;
    std::map<std::string, int> reasons;  // what the errors were
    auto error = [&](const std::string& why) {
      ++errors;
      std::lock_guard<std::mutex> lock(mu);
      ++reasons[why];
    };
    std::vector<double> latency;
    std::vector<std::string> accepted;
    const auto t0 = Clock::now();
    std::vector<std::thread> pool;
    for (int i = 0; i < clients; ++i)
      pool.emplace_back([&] {
        auto c = server.client();
        while (since(t0) < seconds) {
          const json body = request("grad_cam");
          const auto t = Clock::now();
          auto r = c.Post("/api/explain", body.dump(), "application/json");
          if (!r) {
            error("POST: " + httplib::to_string(r.error()));
            continue;
          }
          if (r->status == 429) {
            ++n429;
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            continue;
          }
          if (r->status != 202) {
            error("POST status " + std::to_string(r->status) + ": " + r->body.substr(0, 120));
            continue;
          }
          const std::string id = json::parse(r->body)["id"];
          {
            std::lock_guard<std::mutex> lock(mu);
            accepted.push_back(id);
          }
          std::string events;
          auto e = c.Get(("/api/jobs/" + id + "/events").c_str(), [&](const char* d, size_t n) {
            events.append(d, n);
            return true;
          });
          if (events.find("event: done\n") == std::string::npos) {
            error("events: " + (e ? "status " + std::to_string(e->status) : httplib::to_string(e.error())) + " " +
                  events.substr(0, 60));
            continue;
          }
          std::lock_guard<std::mutex> lock(mu);
          latency.push_back(since(t));
        }
      });
    for (auto& t : pool) t.join();
    const double elapsed = since(t0);
    // Lost: accepted and never done.
    auto c = server.client();
    int64_t lost = 0;
    for (const auto& id : accepted) {
      auto r = c.Get(("/api/jobs/" + id).c_str());
      if (!r || r->status != 200 || json::parse(r->body)["state"] != "done") ++lost;
    }
    const double rate = static_cast<double>(latency.size()) / elapsed;
    if (w == 1) one_worker = rate;
    std::printf("%-8d %8zu %8lld %8lld %8lld %10.2f %8.3f %8.3f %9.0f", w, latency.size(), (long long)n429.load(),
                (long long)errors.load(), (long long)lost, rate, percentile(latency, 0.5), percentile(latency, 0.99),
                server.peak_mb());
    if (w != 1) std::printf("   (%.2fx one worker)", rate / one_worker);
    std::printf("\n");
    for (const auto& [why, n] : reasons) std::printf("    error x%d: %s\n", n, why.c_str());
    if (workers == 1) break;
  }

  // ---- 3. cached results -------------------------------------------------------------------
  if (parts.find('3') != std::string::npos) {
    Server server(root, a.threads, 1, 64);
    auto c = server.client();
    const json body = request("grad_cam");
    std::string key;
    explain_over_http(c, body, &key);
    std::vector<double> values, meta, hit;
    for (int i = 0; i < 1000; ++i) {
      auto t = Clock::now();
      auto r = c.Get(("/api/results/" + key + "/values").c_str());
      values.push_back(since(t));
      t = Clock::now();
      auto m = c.Get(("/api/results/" + key).c_str());
      meta.push_back(since(t));
      t = Clock::now();
      auto h = c.Post("/api/explain", body.dump(), "application/json");
      hit.push_back(since(t));
      if (!r || r->status != 200 || !m || m->status != 200 || !h || h->status != 200) {
        std::printf("  a cached request failed\n");
        break;
      }
    }
    std::printf("\n3. cached results, 1000 requests each, one client: p50 / p99 ms\n");
    std::printf("  GET values (raw float32)    %7.2f / %7.2f\n", 1e3 * percentile(values, 0.5), 1e3 * percentile(values, 0.99));
    std::printf("  GET result metadata         %7.2f / %7.2f\n", 1e3 * percentile(meta, 0.5), 1e3 * percentile(meta, 0.99));
    std::printf("  POST explain (cache hit)    %7.2f / %7.2f\n", 1e3 * percentile(hit, 0.5), 1e3 * percentile(hit, 0.99));
  }
  std::error_code ec;
  fs::remove_all(root, ec);
  return 0;
}
