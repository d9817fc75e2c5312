// `candela serve` end to end: the built binary as a subprocess on 127.0.0.1 with an ephemeral
// port, driven by httplib's client. No timing bounds: every wait polls with a generous timeout.
#include <gtest/gtest.h>
#include <httplib.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "candela/io/npy.h"
#include "test_util.h"

using namespace candela;
using candela::testing::fixture;
using candela::testing::TempDir;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr auto kWait = std::chrono::minutes(5);  // generous: a loaded machine is slow, never wrong

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string base64(const std::string& in) {
  static const char* chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += chars[(acc >> bits) & 63];
    }
  }
  if (bits > 0) out += chars[(acc << (6 - bits)) & 63];
  while (out.size() % 4) out += '=';
  return out;
}

// The folders a server is started on: models and data copied from the fixtures (copies, so the
// symlink test's link is the only one that leaves), and a result store.
struct Site {
  TempDir dir;
  std::string models = dir / "models", data = dir / "data", results = dir / "results";
  Site() {
    fs::create_directories(models);
    fs::create_directories(data);
    for (const char* f : {"digits_cnn.pt", "digits_cnn.json", "breast_cancer_mlp.pt", "breast_cancer_mlp.json",
                          "resnet18.pt", "resnet18.json"})
      fs::copy_file(fixture(f), models + "/" + f);
    for (const char* f : {"digit_0.png", "digit_1.png", "breast_cancer_test.npy", "sample_224.png"})
      fs::copy_file(fixture(f), data + "/" + f);
    // The token model (its sidecar names the vocabulary beside it) and one text, as a file.
    for (const char* f : {"text_bert.pt", "text_bert.json", "text_bert_vocab.txt"}) fs::copy_file(fixture(f), models + "/" + f);
    std::ofstream(data + "/review.txt") << text << "\n";
  }
  std::string text = "watched it wonderful of watched it a";
};

// `candela serve` as a child process; the URL is the first line it prints.
class ServerProcess {
 public:
  ServerProcess(const Site& site, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {CANDELA_CLI_PATH, "--threads", "1", "serve", "--models", site.models,
                                     "--data", site.data, "--results", site.results, "--port", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    int out[2];
    EXPECT_EQ(pipe(out), 0);
    pid_ = fork();
    if (pid_ == 0) {
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
    // Read the first line (the URL), waiting as long as it takes the binary to start.
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    char c;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{out[0], POLLIN, 0};
      if (poll(&p, 1, 1000) <= 0) continue;
      if (read(out[0], &c, 1) != 1) break;
      if (c == '\n') break;
      line += c;
    }
    close(out[0]);
    const auto at = line.find("http://");
    if (at == std::string::npos) {
      ADD_FAILURE() << "the server printed no URL: '" << line << "'";
      return;
    }
    const auto end = line.find('/', at + 7);
    const std::string hostport = line.substr(at + 7, end - at - 7);
    host_ = hostport.substr(0, hostport.rfind(':'));
    port_ = std::stoi(hostport.substr(hostport.rfind(':') + 1));
  }
  ~ServerProcess() { stop(SIGTERM); }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // SIGTERM stops it gracefully; SIGKILL is the crash the store must survive.
  void stop(int sig) {
    if (pid_ <= 0) return;
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  bool running() const { return pid_ > 0; }

  httplib::Client client(const std::string& token = "") const {
    httplib::Client c(host_, port_);
    c.set_read_timeout(std::chrono::minutes(5));
    c.set_url_encode(false);  // the traversal tests send their paths as written
    if (!token.empty()) c.set_bearer_token_auth(token);
    return c;
  }
  int port() const { return port_; }

 private:
  pid_t pid_ = -1;
  std::string host_;
  int port_ = 0;
};

json body_of(const httplib::Result& r) {
  if (!r) return json{{"error", "no response: " + httplib::to_string(r.error())}};
  try {
    return json::parse(r->body);
  } catch (const std::exception&) {
    return json{{"raw", r->body}};
  }
}

httplib::Result post(httplib::Client& c, const std::string& path, const json& body) {
  return c.Post(path.c_str(), body.dump(), "application/json");
}

// The job's record once `pred` holds (polling; fails the test after kWait).
json wait_job(httplib::Client& c, const std::string& id, const std::function<bool(const json&)>& pred) {
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  json j;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = c.Get(("/api/jobs/" + id).c_str());
    if (r && r->status == 200) {
      j = json::parse(r->body);
      if (pred(j)) return j;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ADD_FAILURE() << "job " << id << " never reached the expected state; last: " << j.dump();
  return j;
}
bool finished(const json& j) {
  const std::string s = j.value("state", "");
  return s == "done" || s == "error" || s == "cancelled" || s == "interrupted";
}

json digits_request(int n_steps = 32) {
  return {{"model", "digits_cnn.pt"},
          {"input", {{"data", "digit_0.png"}}},
          {"method", "integrated_gradients"},
          {"target", "0"},
          {"options", {{"n_steps", n_steps}}}};
}
// A job that takes minutes on any machine (resnet18, one path point per model call) and reports
// progress after every call, so it can be watched, cancelled and killed mid-way.
json slow_request(int n_steps = 4096) {
  return {{"model", "resnet18.pt"},
          {"input", {{"data", "sample_224.png"}}},
          {"method", "integrated_gradients"},
          {"batch_size", 1},
          {"options", {{"n_steps", n_steps}}}};
}

struct Cli {
  int code = -1;
  std::string err;
};
Cli cli(const std::string& args) {
  TempDir tmp;
  const std::string cmd = std::string(CANDELA_CLI_PATH) + " " + args + " >" + (tmp / "out") + " 2>" + (tmp / "err");
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(tmp / "err")};
}

std::string submit_ok(httplib::Client& c, const json& request) {
  auto r = post(c, "/api/explain", request);
  EXPECT_TRUE(r && (r->status == 202 || r->status == 200)) << (r ? r->body : "no response");
  return body_of(r).value("id", "");
}

}  // namespace

// The result of an explain request is the CLI's attributions.npy, bit for bit, for an image
// sample by id (digits CNN) and an uploaded .npy (breast-cancer MLP).
TEST(Server, ExplainResultEqualsTheCli) {
  Site site;
  ServerProcess server(site);
  auto c = server.client();
  struct Case {
    json request;
    std::string cli_args;
  };
  const std::string rows = slurp(fixture("breast_cancer_test.npy"));
  std::vector<Case> cases = {
      {digits_request(), "--model " + site.models + "/digits_cnn.pt --input " + site.data +
                             "/digit_0.png --method integrated_gradients --target 0 --option n_steps=32"},
      {{{"model", "breast_cancer_mlp.pt"},
        {"input", {{"npy", base64(rows)}}},
        {"method", "gradient_shap"},
        {"baseline", "zeros"},
        {"target", "1"},
        {"options", {{"n_samples", 16}}}},
       "--model " + site.models + "/breast_cancer_mlp.pt --input " + fixture("breast_cancer_test.npy") +
           " --method gradient_shap --baseline zeros --target 1 --option n_samples=16"},
      // Text typed in (the web UI's what-if) is tokenized as the CLI tokenizes a .txt line.
      {{{"model", "text_bert.pt"},
        {"input", {{"text", site.text}}},
        {"method", "layer_integrated_gradients"},
        {"target", "1"},
        {"options", {{"n_steps", 16}, {"layers", {"tok"}}}}},
       "--model " + site.models + "/text_bert.pt --input " + site.data +
           "/review.txt --method layer_integrated_gradients --layer tok --target 1 --option n_steps=16"},
  };
  for (const auto& k : cases) {
    const std::string id = submit_ok(c, k.request);
    ASSERT_FALSE(id.empty());
    const json job = wait_job(c, id, finished);
    ASSERT_EQ(job["state"], "done") << job.dump();
    const std::string key = job["result"];

    TempDir out;
    const Cli r = cli("explain --quiet --threads 1 " + k.cli_args + " --out " + out.path());
    ASSERT_EQ(r.code, 0) << r.err;
    const std::string expected = slurp(out / "attributions.npy");

    auto npy = c.Get(("/api/results/" + key + "/values?format=npy").c_str());
    ASSERT_TRUE(npy && npy->status == 200);
    EXPECT_EQ(npy->body, expected) << k.request["model"];

    // Raw float32 with the shape in a header: the same numbers.
    auto raw = c.Get(("/api/results/" + key + "/values").c_str());
    ASSERT_TRUE(raw && raw->status == 200);
    const at::Tensor want = read_npy(out / "attributions.npy").to(at::kFloat).contiguous();
    std::string shape;
    for (auto s : want.sizes()) shape += (shape.empty() ? "" : ",") + std::to_string(s);
    EXPECT_EQ(raw->get_header_value("X-Shape"), shape);
    ASSERT_EQ(raw->body.size(), want.numel() * sizeof(float));
    EXPECT_EQ(std::memcmp(raw->body.data(), want.data_ptr(), raw->body.size()), 0);

    // The metadata is the CLI's attribution.json, but for the time taken and the model's path.
    auto meta = c.Get(("/api/results/" + key).c_str());
    ASSERT_TRUE(meta && meta->status == 200);
    json served = json::parse(meta->body), written = json::parse(slurp(out / "attribution.json"));
    for (json* j : {&served, &written}) {
      ASSERT_TRUE(j->contains("wall_seconds"));
      j->erase("wall_seconds");
      j->erase("model");
    }
    EXPECT_TRUE(served == written) << "the served attribution.json differs from the CLI's";
    if (k.request["model"] == "text_bert.pt") {
      auto tokens = c.Get(("/api/results/" + key + "/files/tokens.json").c_str());
      ASSERT_TRUE(tokens && tokens->status == 200);
      EXPECT_EQ(json::parse(tokens->body), json::parse(slurp(out / "tokens.json")));
    }
  }
  // The image's heatmap is served too.
  const std::string id = submit_ok(c, digits_request());
  const json job = wait_job(c, id, finished);
  auto png = c.Get(("/api/results/" + job["result"].get<std::string>() + "/heatmap.png").c_str());
  ASSERT_TRUE(png && png->status == 200);
  EXPECT_EQ(png->get_header_value("Content-Type"), "image/png");
  EXPECT_EQ(png->body.substr(1, 3), "PNG");
}

TEST(Server, ListsModelsDataMethodsAndMetrics) {
  Site site;
  ServerProcess server(site);
  auto c = server.client();
  const json models = body_of(c.Get("/api/models"));
  ASSERT_TRUE(models.is_array()) << models.dump();
  std::vector<std::string> ids;
  for (const auto& m : models) ids.push_back(m["id"]);
  EXPECT_EQ(ids, (std::vector<std::string>{"breast_cancer_mlp.pt", "digits_cnn.pt", "resnet18.pt", "text_bert.pt"}));
  EXPECT_EQ(models[1]["sidecar"], "digits_cnn.json");

  const json info = body_of(c.Get("/api/models/digits_cnn.pt"));
  EXPECT_EQ(info["classes"], 10) << info.dump();
  EXPECT_EQ(info["input"]["shape"], (std::vector<int64_t>{1, 8, 8}));
  EXPECT_FALSE(info["layers"].empty());

  const json methods = body_of(c.Get("/api/methods"));
  EXPECT_EQ(methods.dump(), Registry::builtin().to_json().dump());
  // A browser's Accept-Encoding gets gzip, not brotli (httplib's quality 11 takes seconds).
  auto enc = c.Get("/api/methods", {{"Accept-Encoding", "gzip, deflate, br"}});
  ASSERT_TRUE(enc && enc->status == 200);
  EXPECT_EQ(enc->get_header_value("Content-Encoding"), "gzip");
  EXPECT_EQ(json::parse(enc->body).dump(), methods.dump());
  const json metrics = body_of(c.Get("/api/metrics"));
  EXPECT_FALSE(metrics.empty());

  const json data = body_of(c.Get("/api/data"));
  ASSERT_TRUE(data.is_array());
  EXPECT_EQ(data.size(), 5u);
  const json text = body_of(c.Get("/api/data/review.txt"));
  EXPECT_EQ(text["kind"], "text") << text.dump();
  const json rows = body_of(c.Get("/api/data/breast_cancer_test.npy"));
  EXPECT_EQ(rows["kind"], "npy");
  EXPECT_EQ(rows["shape"].size(), 2u);
  auto thumb = c.Get("/api/data/digit_0.png/thumbnail.png");
  ASSERT_TRUE(thumb && thumb->status == 200);
  EXPECT_EQ(thumb->body.substr(1, 3), "PNG");
  // The sample's own bytes (the web UI draws and edits them), and nothing outside --data.
  auto file = c.Get("/api/data/breast_cancer_test.npy/file");
  ASSERT_TRUE(file && file->status == 200);
  std::ifstream npy(site.data + "/breast_cancer_test.npy", std::ios::binary);
  EXPECT_EQ(file->body, std::string(std::istreambuf_iterator<char>(npy), {}));
  EXPECT_EQ(info["class_names"].size(), 10u);
  EXPECT_EQ(body_of(c.Get("/api/models/breast_cancer_mlp.pt"))["feature_names"][0], "mean radius");

  const json predict = body_of(post(c, "/api/predict", {{"model", "digits_cnn.pt"}, {"input", {{"data", "digit_0.png"}}}, {"top_k", 3}}));
  ASSERT_TRUE(predict.contains("samples")) << predict.dump();
  EXPECT_EQ(predict["samples"][0]["top"].size(), 3u);
  const double p0 = predict["samples"][0]["top"][0]["score"], p1 = predict["samples"][0]["top"][1]["score"];
  EXPECT_GE(p0, p1);
  EXPECT_LE(p0, 1.0);

  // "/" is the web UI when one is built (web/dist), else a page listing the API; /api lists it.
  auto index = c.Get("/");
  ASSERT_TRUE(index && index->status == 200);
  EXPECT_TRUE(index->body.find("/api/explain") != std::string::npos || index->body.find("<div id=\"app\">") != std::string::npos)
      << index->body.substr(0, 300);
  EXPECT_NE(body_of(c.Get("/api")).dump().find("/api/explain"), std::string::npos);
}

// Progress events while the job runs, rising, and `done` last. The job waits in the queue behind
// a slow one until the stream is open, so the test sees it run from the start.
TEST(Server, ProgressEventsRiseAndEndWithDone) {
  Site site;
  ServerProcess server(site, {"--workers", "1"});
  auto c = server.client();
  const std::string slow = submit_ok(c, slow_request());
  wait_job(c, slow, [](const json& j) { return j["state"] == "running"; });
  json request = digits_request(2048);
  request["batch_size"] = 8;  // 256 model calls, each reported
  const std::string id = submit_ok(c, request);
  EXPECT_EQ(body_of(c.Get(("/api/jobs/" + id).c_str()))["state"], "queued");

  std::vector<std::pair<std::string, json>> events;
  std::atomic<bool> opened{false};
  std::string buffer;
  std::thread reader([&] {
    auto rc = server.client();
    rc.Get(("/api/jobs/" + id + "/events").c_str(), [&](const char* data, size_t n) {
      buffer.append(data, n);
      for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
        const std::string block = buffer.substr(0, end);
        buffer.erase(0, end + 2);
        std::string event, payload;
        std::istringstream lines(block);
        for (std::string line; std::getline(lines, line);) {
          if (line.rfind("event: ", 0) == 0) event = line.substr(7);
          if (line.rfind("data: ", 0) == 0) payload = line.substr(6);
        }
        if (!event.empty()) events.emplace_back(event, json::parse(payload));
        opened = true;
      }
      return true;
    });
  });
  // The stream is open once its first event (queued) arrived; then the slow job makes way.
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (!opened && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(opened) << "the event stream never opened";
  while (std::chrono::steady_clock::now() < deadline && body_of(c.Get(("/api/jobs/" + id).c_str()))["state"] == "queued") {
    auto r = c.Delete(("/api/jobs/" + slow).c_str());
    if (r && r->status == 409) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  reader.join();
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.front().first, "queued");
  EXPECT_EQ(events.back().first, "done");
  EXPECT_EQ(events.back().second["progress"]["fraction"], 1.0);
  // Progress is counted per stage (the model's first outputs, then the method's path points):
  // within a stage it never goes back; the method's stage is seen with its planned total.
  int64_t last = -1, method_events = 0;
  std::string stage;
  for (const auto& [event, j] : events) {
    if (event != "progress") continue;
    EXPECT_EQ(j["state"], "running");
    const int64_t done = j["progress"]["done"];
    if (j["progress"]["stage"] != stage) last = -1;
    stage = j["progress"]["stage"];
    EXPECT_GE(done, last) << "progress went back in stage " << stage;
    EXPECT_LE(done, j["progress"]["total"].get<int64_t>());
    last = done;
    if (stage == "integrated_gradients" && done > 0) {
      ++method_events;
      EXPECT_EQ(j["progress"]["total"], 2048);
    }
  }
  EXPECT_GE(method_events, 1);
  EXPECT_EQ(wait_job(c, slow, finished)["state"], "cancelled");
}

TEST(Server, CancelsARunningJobAndStoresNothing) {
  Site site;
  ServerProcess server(site);
  auto c = server.client();
  const std::string id = submit_ok(c, slow_request());
  const json running = wait_job(c, id, [](const json& j) { return j["progress"]["done"].get<int64_t>() > 0; });
  EXPECT_EQ(running["state"], "running");
  EXPECT_GT(running["progress"]["total"].get<int64_t>(), 0);
  auto r = c.Delete(("/api/jobs/" + id).c_str());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202) << r->body;
  const json j = wait_job(c, id, finished);
  EXPECT_EQ(j["state"], "cancelled");
  EXPECT_FALSE(j.contains("result"));
  EXPECT_FALSE(fs::exists(site.results + "/r/" + j["key"].get<std::string>()));
  EXPECT_TRUE(fs::is_empty(site.results + "/tmp"));
  // Cancelling again: nothing to cancel.
  auto again = c.Delete(("/api/jobs/" + id).c_str());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 409);
  // And the events stream of a cancelled job ends with `cancelled`.
  auto events = c.Get(("/api/jobs/" + id + "/events").c_str());
  ASSERT_TRUE(events);
  EXPECT_NE(events->body.find("event: cancelled\n"), std::string::npos) << events->body;
}

TEST(Server, IdenticalRequestIsACacheHit) {
  Site site;
  ServerProcess server(site);
  auto c = server.client();
  const std::string first = submit_ok(c, digits_request());
  const json done = wait_job(c, first, finished);
  ASSERT_EQ(done["state"], "done");
  EXPECT_FALSE(done["cached"].get<bool>());

  auto r = post(c, "/api/explain", digits_request());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  const json hit = json::parse(r->body);
  EXPECT_EQ(hit["state"], "done");
  EXPECT_TRUE(hit["cached"].get<bool>());
  EXPECT_EQ(hit["result"], done["result"]);
  EXPECT_NE(hit["id"], done["id"]);
  // Another option is another result.
  auto other = post(c, "/api/explain", digits_request(16));
  ASSERT_TRUE(other);
  EXPECT_NE(json::parse(other->body)["key"], done["key"]);
}

TEST(Server, FullQueueAnswers429WithRetryAfter) {
  Site site;
  ServerProcess server(site, {"--workers", "1", "--queue", "1"});
  auto c = server.client();
  const std::string running = submit_ok(c, slow_request(4096));
  wait_job(c, running, [](const json& j) { return j["state"] == "running"; });
  // The same request while it runs is that job, not a new one.
  auto same = post(c, "/api/explain", slow_request(4096));
  ASSERT_TRUE(same);
  EXPECT_EQ(same->status, 202);
  EXPECT_EQ(json::parse(same->body)["id"], running);
  EXPECT_TRUE(json::parse(same->body)["deduplicated"].get<bool>());
  const std::string queued = submit_ok(c, slow_request(4095));
  EXPECT_EQ(body_of(c.Get(("/api/jobs/" + queued).c_str()))["state"], "queued");
  auto r = post(c, "/api/explain", slow_request(4094));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429) << r->body;
  EXPECT_FALSE(r->get_header_value("Retry-After").empty());
  EXPECT_NE(json::parse(r->body)["error"].get<std::string>().find("--queue"), std::string::npos);
  // A queued job cancels at once; then there is room again.
  auto d = c.Delete(("/api/jobs/" + queued).c_str());
  ASSERT_TRUE(d);
  EXPECT_EQ(d->status, 200);
  EXPECT_EQ(json::parse(d->body)["state"], "cancelled");
  auto again = post(c, "/api/explain", slow_request(4094));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 202) << again->body;
  c.Delete(("/api/jobs/" + json::parse(again->body)["id"].get<std::string>()).c_str());
  c.Delete(("/api/jobs/" + running).c_str());
}

TEST(Server, OversizedUploadIs413AndOverLimitParametersAre422) {
  Site site;
  ServerProcess server(site, {"--max-upload", "1000", "--max-rows", "100"});
  auto c = server.client();
  const std::string rows = slurp(fixture("breast_cancer_test.npy"));
  ASSERT_GT(rows.size(), 1000u);
  json request = {{"model", "breast_cancer_mlp.pt"}, {"input", {{"npy", base64(rows)}}}, {"method", "saliency"}};
  auto r = post(c, "/api/explain", request);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(json::parse(r->body)["error"].get<std::string>().find("1000"), std::string::npos) << r->body;
  // A body far past the limit is refused before it is read whole, with the limit named too.
  auto big = c.Post("/api/explain", std::string(3 << 20, ' '), "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  EXPECT_NE(json::parse(big->body)["error"].get<std::string>().find("1000"), std::string::npos) << big->body;

  json rows_request = {{"model", "breast_cancer_mlp.pt"}, {"input", {{"data", "breast_cancer_test.npy"}}}, {"method", "saliency"}};
  auto many = post(c, "/api/explain", rows_request);
  ASSERT_TRUE(many);
  EXPECT_EQ(many->status, 422);
  EXPECT_NE(json::parse(many->body)["error"].get<std::string>().find("limit of 100 "), std::string::npos) << many->body;

  auto steps = post(c, "/api/explain", digits_request(100000));
  ASSERT_TRUE(steps);
  EXPECT_EQ(steps->status, 422);
  EXPECT_NE(json::parse(steps->body)["error"].get<std::string>().find("4096"), std::string::npos) << steps->body;
}

TEST(Server, RefusesPathsOutsideItsFolders) {
  Site site;
  fs::create_symlink(fixture("digits_cnn.pt"), site.models + "/outside.pt");  // a link that leaves
  fs::create_symlink(fixture("digit_1.png"), site.data + "/outside.png");
  fs::create_directories(site.models + "/sub");
  fs::create_symlink("../digits_cnn.pt", site.models + "/sub/inside.pt");  // one that stays: fine
  ServerProcess server(site);
  auto c = server.client();
  for (const std::string model : std::vector<std::string>{"../models/digits_cnn.pt", "sub/../../models/digits_cnn.pt", "%2e%2e/models/digits_cnn.pt",
                                  "%2E%2E%2Fmodels%2Fdigits_cnn.pt", site.models + "/digits_cnn.pt", "/etc/passwd",
                                  "outside.pt"}) {
    json request = digits_request();
    request["model"] = model;
    auto r = post(c, "/api/explain", request);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << model << ": " << r->body;
    EXPECT_TRUE(json::parse(r->body).contains("error"));
  }
  json request = digits_request();
  request["input"] = {{"data", "outside.png"}};
  auto r = post(c, "/api/explain", request);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  request["input"] = {{"data", "../models/digits_cnn.pt"}};
  r = post(c, "/api/explain", request);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  // Fields that name files on the CLI name samples under --data here, and nothing else.
  const json rows_request = {{"model", "breast_cancer_mlp.pt"}, {"input", {{"data", "breast_cancer_test.npy"}}},
                             {"method", "kernel_shap"}, {"options", {{"n_samples", 64}}}};
  for (const char* field : {"background", "training_data"}) {
    request = rows_request;
    request[field] = fixture("breast_cancer_train.npy");  // an absolute path outside --data
    r = post(c, "/api/explain", request);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << field << ": " << r->body;
    EXPECT_NE(r->body.find(field), std::string::npos) << r->body;
  }
  // So do a mask and forward arguments.
  for (const auto& [field, value] : std::vector<std::pair<std::string, json>>{
           {"mask", fixture("text_test_ids.npy")}, {"forward_args", {"token_type_ids=" + fixture("text_test_ids.npy")}}}) {
    request = rows_request;
    request[field] = value;
    r = post(c, "/api/explain", request);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << field << ": " << r->body;
    EXPECT_NE(r->body.find(field), std::string::npos) << r->body;
  }
  // In URLs, raw and percent-encoded.
  for (const std::string path : std::vector<std::string>{"/api/models/../../etc/passwd", "/api/models/%2e%2e/%2e%2e/etc/passwd",
                                 "/api/models/..%2F..%2Fetc%2Fpasswd", "/api/models/outside.pt",
                                 "/api/data/%2e%2e%2fmodels%2fdigits_cnn.pt", "/api/data/outside.png",
                                 "/api/data/../models/digits_cnn.pt/file", "/api/data/outside.png/file"}) {
    auto g = c.Get(path.c_str());
    ASSERT_TRUE(g) << path;
    EXPECT_TRUE(g->status == 400 || g->status == 404) << path << ": " << g->status << " " << g->body;
    EXPECT_EQ(g->body.find("root:"), std::string::npos);
  }
  auto missing = c.Get("/api/models/nothing.pt");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  // A link that stays inside is a model like any other.
  auto inside = c.Get("/api/models/sub/inside.pt");
  ASSERT_TRUE(inside);
  EXPECT_EQ(inside->status, 200) << inside->body;
  // Unknown job and result ids.
  auto job = c.Get("/api/jobs/0123456789abcdef");
  ASSERT_TRUE(job);
  EXPECT_EQ(job->status, 404);
  auto result = c.Get(("/api/results/" + std::string(64, 'a')).c_str());
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 404);
}

TEST(Server, RefusesANonLoopbackAddressWithoutAToken) {
  Site site;
  const Cli r = cli("serve --models " + site.models + " --host 0.0.0.0 --port 0");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err.rfind("candela: error: refusing to listen on '0.0.0.0' without --token", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(Server, TokenIsRequiredWhenSet) {
  Site site;
  ServerProcess server(site, {"--token", "s3cret-token"});
  auto anonymous = server.client();
  for (const char* path : {"/api/models", "/api/methods", "/api/jobs/0123456789abcdef"}) {
    auto r = anonymous.Get(path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << path;
    EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Bearer");
  }
  auto post_anon = post(anonymous, "/api/explain", digits_request());
  ASSERT_TRUE(post_anon);
  EXPECT_EQ(post_anon->status, 401);
  auto wrong = server.client("s3cret-tokeN");
  auto w = wrong.Get("/api/models");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->status, 401);
  auto right = server.client("s3cret-token");
  auto ok = right.Get("/api/models");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(json::parse(ok->body).size(), 4u);
}

// The token from CANDELA_TOKEN (kept out of `ps`): the same protection as --token.
TEST(Server, TokenFromTheEnvironment) {
  Site site;
  setenv("CANDELA_TOKEN", "env-token-42", 1);
  ServerProcess server(site, {});
  unsetenv("CANDELA_TOKEN");
  auto anonymous = server.client();
  auto r = anonymous.Get("/api/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  auto right = server.client("env-token-42");
  auto ok = right.Get("/api/models");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

// kill -9 mid-job, then a restart on the same store: the finished result is served as it was,
// the job that was running is reported interrupted, and no half-written result is left.
TEST(Server, SurvivesKill9) {
  Site site;
  std::string done_id, key, values, slow_id;
  {
    ServerProcess server(site);
    auto c = server.client();
    done_id = submit_ok(c, digits_request());
    const json done = wait_job(c, done_id, finished);
    ASSERT_EQ(done["state"], "done");
    key = done["result"];
    auto v = c.Get(("/api/results/" + key + "/values?format=npy").c_str());
    ASSERT_TRUE(v && v->status == 200);
    values = v->body;
    slow_id = submit_ok(c, slow_request());
    wait_job(c, slow_id, [](const json& j) { return j["progress"]["done"].get<int64_t>() > 0; });
    server.stop(SIGKILL);
  }
  ServerProcess server(site);
  auto c = server.client();
  const json done = body_of(c.Get(("/api/jobs/" + done_id).c_str()));
  EXPECT_EQ(done["state"], "done");
  EXPECT_EQ(done["result"], key);
  auto v = c.Get(("/api/results/" + key + "/values?format=npy").c_str());
  ASSERT_TRUE(v && v->status == 200);
  EXPECT_EQ(v->body, values);
  const json slow = body_of(c.Get(("/api/jobs/" + slow_id).c_str()));
  EXPECT_EQ(slow["state"], "interrupted") << slow.dump();
  EXPECT_FALSE(slow.value("error", "").empty());
  EXPECT_FALSE(fs::exists(site.results + "/r/" + slow["key"].get<std::string>()));
  EXPECT_TRUE(fs::is_empty(site.results + "/tmp"));
  auto events = c.Get(("/api/jobs/" + slow_id + "/events").c_str());
  ASSERT_TRUE(events);
  EXPECT_NE(events->body.find("\"state\":\"interrupted\""), std::string::npos) << events->body;
  // And the same request again is a cache hit on the surviving result.
  auto again = post(c, "/api/explain", digits_request());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
  EXPECT_EQ(json::parse(again->body)["result"], key);
}

// Bad requests are 400 with the one line the CLI prints for the same mistake.
TEST(Server, BadRequestsAre400WithTheClisMessage) {
  Site site;
  ServerProcess server(site);
  auto c = server.client();
  auto malformed = c.Post("/api/explain", "{\"model\": \"digits_cnn.pt\",", "application/json");
  ASSERT_TRUE(malformed);
  EXPECT_EQ(malformed->status, 400);
  EXPECT_NE(json::parse(malformed->body)["error"].get<std::string>().find("not valid JSON"), std::string::npos);

  struct Case {
    json request;
    std::string cli_args;
  };
  const std::string base = "explain --model " + site.models + "/digits_cnn.pt --input " + site.data + "/digit_0.png --out " +
                           site.dir.path() + "/never";
  json unknown_method = digits_request();
  unknown_method["method"] = "integrated_gradient";
  unknown_method.erase("options");
  json bad_option = digits_request(-3);
  json bad_layer = {{"model", "digits_cnn.pt"}, {"input", {{"data", "digit_0.png"}}}, {"method", "saliency"}, {"layers", {"features.2"}}};
  for (const auto& [request, args] : std::vector<Case>{
           {unknown_method, base + " --method integrated_gradient"},
           {bad_option, base + " --method integrated_gradients --option n_steps=-3"},
           {bad_layer, base + " --method saliency --layer features.2"}}) {
    auto r = post(c, "/api/explain", request);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << r->body;
    const Cli expected = cli(args);
    ASSERT_NE(expected.code, 0);
    const std::string prefix = "candela: error: ";
    ASSERT_EQ(expected.err.rfind(prefix, 0), 0u) << expected.err;
    EXPECT_EQ(json::parse(r->body)["error"].get<std::string>() + "\n", expected.err.substr(prefix.size()));
  }
  EXPECT_FALSE(fs::exists(site.dir / "never"));
  // Unknown fields are refused with a suggestion, like unknown flags.
  json typo = digits_request();
  typo["targt"] = "1";
  auto r = post(c, "/api/explain", typo);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(json::parse(r->body)["error"].get<std::string>().find("Did you mean 'target'"), std::string::npos) << r->body;
  // Text that is no text: named, with the fix.
  for (const auto& [text, says] : std::vector<std::pair<std::string, std::string>>{
           {"\n\n", "holds no text"}, {std::string("a\0b", 3), "NUL byte"}}) {
    auto t = post(c, "/api/explain", {{"model", "text_bert.pt"}, {"input", {{"text", text}}}, {"method", "occlusion"}});
    ASSERT_TRUE(t);
    EXPECT_EQ(t->status, 400) << t->body;
    EXPECT_NE(json::parse(t->body)["error"].get<std::string>().find(says), std::string::npos) << t->body;
  }
  // The server never left a job behind for a refused request.
  EXPECT_EQ(body_of(c.Get("/api/jobs")).size(), 0u);
}

// Evaluate takes an input as explain does (the web UI's checks on one edited sample): the same
// bytes uploaded or named under --data give the same numbers.
TEST(Server, EvaluatesAnUploadedInputLikeTheSameSample) {
  Site site;
  ServerProcess server(site);
  auto c = server.client();
  const std::string rows = slurp(fixture("breast_cancer_test.npy"));
  json summaries;
  for (const json& data : {json("breast_cancer_test.npy"), json{{"npy", base64(rows)}}}) {
    json request = {{"model", "breast_cancer_mlp.pt"}, {"data", data}, {"methods", {"saliency"}},
                    {"metrics", {"sparseness", "deletion"}}, {"max_samples", 4}};
    auto r = post(c, "/api/evaluate", request);
    ASSERT_TRUE(r);
    ASSERT_TRUE(r->status == 200 || r->status == 202) << r->body;
    const json job = wait_job(c, json::parse(r->body)["id"], finished);
    ASSERT_EQ(job["state"], "done") << job.dump();
    const json result = body_of(c.Get(("/api/results/" + job["result"].get<std::string>()).c_str()));
    summaries.push_back(result["summary"]);
  }
  EXPECT_EQ(summaries[0]["sparseness"]["methods"]["saliency"]["n"], 4);
  EXPECT_EQ(summaries[0].dump(), summaries[1].dump());
  auto bad = post(c, "/api/evaluate", {{"model", "breast_cancer_mlp.pt"}, {"data", {{"npy", "not base64!"}}}, {"methods", {"saliency"}},
                                       {"metrics", {"sparseness"}}});
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400) << bad->body;
}

// The shortcut audit as a job: audit.json is the result, as `candela audit` writes it.
TEST(Server, AuditsAFolderOfImages) {
  Site site;
  fs::create_directories(site.data + "/digits");
  for (const char* f : {"digit_0.png", "digit_1.png", "digit_2.png"}) fs::copy_file(fixture(f), site.data + "/digits/" + f);
  ServerProcess server(site);
  auto c = server.client();
  auto r = post(c, "/api/audit", {{"model", "digits_cnn.pt"}, {"data", "digits"}, {"method", "saliency"}, {"clusters", 2}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const json job = wait_job(c, json::parse(r->body)["id"], finished);
  ASSERT_EQ(job["state"], "done") << job.dump();
  const json audit = body_of(c.Get(("/api/results/" + job["result"].get<std::string>()).c_str()));
  EXPECT_EQ(audit["method"], "saliency") << audit.dump();
  EXPECT_EQ(audit["sample_shares"].size(), 3u);
  EXPECT_TRUE(audit["suspected"].is_boolean());
  for (const char* k : {"x0", "x1", "y0", "y1"}) EXPECT_TRUE(audit["window"].contains(k)) << audit.dump();
  auto bad = post(c, "/api/audit", {{"model", "digits_cnn.pt"}, {"data", "../models"}});
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400) << bad->body;
}

// Feature visualisation as a job: visualization.json is the result, the images are its files;
// dataset examples read a sample under --data; limits and bad options are refused up front.
TEST(Server, VisualizeIsAJobWithItsImages) {
  Site site;
  fs::copy_file(fixture("digits_test.npy"), site.data + "/digits_test.npy");
  ServerProcess server(site);
  auto c = server.client();
  auto r = post(c, "/api/visualize", {{"model", "digits_cnn.pt"}, {"layer", "features.2"}, {"channels", {3}}, {"size", 8},
                                      {"steps", 4}, {"transforms", "none"}, {"data", "digits_test.npy"}, {"top_k", 2}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const json job = wait_job(c, json::parse(r->body)["id"], finished);
  ASSERT_EQ(job["state"], "done") << job.dump();
  const std::string key = job["result"];
  const json vis = body_of(c.Get(("/api/results/" + key).c_str()));
  EXPECT_EQ(vis["objective"].size(), 4u) << vis.dump();
  EXPECT_EQ(vis["dataset_examples"]["3"]["examples"].size(), 2u);
  const json meta = body_of(c.Get(("/api/results/" + key + "/meta").c_str()));
  for (const char* f : {"channel_3.png", "channel_3_examples.png", "visualization.json"})
    EXPECT_NE(std::find(meta["files"].begin(), meta["files"].end(), f), meta["files"].end()) << f << " " << meta.dump();
  auto png = c.Get(("/api/results/" + key + "/files/channel_3.png").c_str());
  ASSERT_TRUE(png);
  EXPECT_EQ(png->status, 200);
  EXPECT_EQ(png->body.substr(1, 3), "PNG");
  for (const json& bad : {json{{"model", "digits_cnn.pt"}, {"layer", "features.2"}, {"channels", {3}}, {"param", "wavelet"}},
                          json{{"model", "digits_cnn.pt"}, {"layer", "features.2"}, {"channels", {3}}, {"data", "../models"}},
                          json{{"model", "digits_cnn.pt"}, {"layer", "features.2"}, {"channels", {3}}, {"out", "/tmp/x"}}}) {
    auto b = post(c, "/api/visualize", bad);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->status, 400) << bad.dump() << " " << b->body;
  }
  auto big = post(c, "/api/visualize", {{"model", "digits_cnn.pt"}, {"layer", "features.2"}, {"channels", {3}}, {"steps", 100000}});
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 422) << big->body;
}

// POST /api/report runs `candela report` as a job: its result is report.json (GET /api/results/KEY)
// with report.md and the PNGs among the files; bad requests are 400 with the CLI's message.
TEST(Server, ReportIsAJobWithTheCommandsFiles) {
  Site site;
  ServerProcess server(site);
  auto c = server.client();
  const json request = {{"model", "digits_cnn.pt"}, {"input", {{"data", "digit_0.png"}}}, {"methods", {"saliency", "grad_cam"}},
                        {"format", "md"}, {"curve_steps", 4}, {"randomisation", false}};
  auto r = post(c, "/api/report", request);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const json job = wait_job(c, json::parse(r->body)["id"], finished);
  ASSERT_EQ(job["state"], "done") << job.dump();
  const std::string key = job["result"];
  const json data = body_of(c.Get(("/api/results/" + key).c_str()));
  ASSERT_EQ(data["samples"][0]["results"].size(), 2u) << data.dump().substr(0, 300);
  EXPECT_EQ(data["samples"][0]["results"][1]["curves"]["deletion"].size(), 5u);
  auto md = c.Get(("/api/results/" + key + "/files/report.md").c_str());
  ASSERT_TRUE(md);
  EXPECT_NE(md->body.find("## Sample 0"), std::string::npos);
  // The same request again is a cache hit.
  r = post(c, "/api/report", request);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  for (const auto& [bad, message] : std::vector<std::pair<json, std::string>>{
           {{{"model", "digits_cnn.pt"}, {"input", {{"data", "digit_0.png"}}}, {"methods", {"salency"}}}, "salency"},
           {{{"model", "digits_cnn.pt"}, {"input", {{"data", "digit_0.png"}}}, {"methods", {"saliency"}}, {"out", "x.html"}}, "\"out\""},
           {{{"model", "digits_cnn.pt"}, {"input", {{"data", "digit_0.png"}}}, {"methods", {"saliency"}}, {"format", "pdf"}}, "html, md"}}) {
    auto b = post(c, "/api/report", bad);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->status, 400) << b->body;
    EXPECT_NE(body_of(b).value("error", "").find(message), std::string::npos) << b->body;
  }
}
