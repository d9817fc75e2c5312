// `candela serve`: HTTP requests -> app-layer jobs (candela/app/jobs.h) -> stored results.
//
// No algorithm lives here. A request is checked (ids inside their folders, limits, the job's own
// cheap validation) and becomes an ExplainJob or EvaluateJob with paths the server chose; worker
// threads run it with the app layer's run() and store its artifacts. httplib.h is included here
// only: Debian builds cpp-httplib as a shared library, and this file must see its declarations
// with the same CPPHTTPLIB_* definitions as the library was built with (CMake takes them from
// its pkg-config file; they change struct layouts, not what this server enables: plain HTTP).
#include "candela/app/server.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <semaphore>
#include <sstream>
#include <thread>

#include "candela/app/jobs.h"
#include "candela/app/report.h"
#include "candela/core/memory.h"
#include "candela/core/error.h"
#include "candela/core/registry.h"
#include "candela/detail/text.h"
#include "candela/eval/evaluate.h"
#include "candela/eval/metrics.h"
#include "candela/io/csv.h"
#include "candela/io/file.h"
#include "candela/io/image.h"
#include "candela/io/npy.h"
#include "candela/render/export.h"

namespace candela {

namespace fs = std::filesystem;
using nlohmann::json;

bool is_loopback_host(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

namespace {

// ---- small helpers -------------------------------------------------------------------------

// An error with its HTTP status; everything else a handler throws is mapped by its type.
struct HttpError : std::runtime_error {
  int status;
  HttpError(int s, const std::string& message) : std::runtime_error(message), status(s) {}
};
[[noreturn]] void fail(int status, const std::string& message) { throw HttpError(status, message); }

std::string one_line(std::string s) {
  auto nl = s.find('\n');
  if (nl != std::string::npos) s = s.substr(0, nl);
  return s;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// SHA-256 (FIPS 180-4), for result keys and upload names.
class Sha256 {
 public:
  void update(const void* data, size_t n) {
    auto p = static_cast<const uint8_t*>(data);
    bits_ += static_cast<uint64_t>(n) * 8;
    while (n > 0) {
      const size_t take = std::min(n, 64 - fill_);
      std::memcpy(buf_ + fill_, p, take);
      fill_ += take;
      p += take;
      n -= take;
      if (fill_ == 64) {
        block(buf_);
        fill_ = 0;
      }
    }
  }
  void update(const std::string& s) { update(s.data(), s.size()); }
  std::string hex() {
    const uint64_t bits = bits_;
    const uint8_t one = 0x80, zero = 0;
    update(&one, 1);
    while (fill_ != 56) update(&zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    update(len, 8);
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (uint32_t v : h_)
      for (int i = 28; i >= 0; i -= 4) out += digits[(v >> i) & 15];
    return out;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void block(const uint8_t* p) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (uint32_t(p[4 * i]) << 24) | (uint32_t(p[4 * i + 1]) << 16) | (uint32_t(p[4 * i + 2]) << 8) | p[4 * i + 3];
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h_[0] += a, h_[1] += b, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
  }
  uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint8_t buf_[64] = {};
  size_t fill_ = 0;
  uint64_t bits_ = 0;
};

std::string sha256(const std::string& bytes) {
  Sha256 h;
  h.update(bytes);
  return h.hex();
}

// Standard base64 (RFC 4648), padding optional, whitespace ignored; anything else is refused.
std::string base64_decode(const std::string& in, const std::string& what) {
  static const std::array<int8_t, 256> table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    const std::string chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < chars.size(); ++i) t[static_cast<uint8_t>(chars[i])] = static_cast<int8_t>(i);
    return t;
  }();
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  bool padding = false;
  for (unsigned char c : in) {
    if (c == '=') {
      padding = true;
      continue;
    }
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (padding || table[c] < 0) fail(400, what + " is not valid base64.");
    acc = (acc << 6) | static_cast<uint32_t>(table[c]);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

bool equal_constant_time(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const std::string& c = a.size() == b.size() ? b : a;  // compare a with itself on a length mismatch
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ c[i]);
  return diff == 0;
}

std::string random_hex(size_t bytes) {
  static std::mutex m;
  static std::random_device rd;
  static std::mt19937_64 gen(rd());
  std::lock_guard<std::mutex> lock(m);
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes; ++i) {
    const auto v = gen();
    out += digits[v & 15];
    out += digits[(v >> 4) & 15];
  }
  return out;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string extension(const std::string& name) { return lower(fs::path(name).extension().string()); }

bool is_model_file(const std::string& name) {
  const std::string e = extension(name);
  return e == ".pt" || e == ".pth" || e == ".ts" || e == ".onnx";
}

std::string data_kind(const std::string& name) {
  if (is_image_path(name)) return "image";
  const std::string e = extension(name);
  if (e == ".npy") return "npy";
  if (e == ".csv") return "csv";
  if (e == ".txt") return "text";
  return "";
}

// ---- folders: ids are relative paths that must stay inside ---------------------------------

class Folder {
 public:
  Folder() = default;
  // `what`: "model" or "data"; `flag`: the option that names the folder.
  Folder(std::string what, std::string flag, const std::string& root) : what_(std::move(what)), flag_(std::move(flag)) {
    if (root.empty()) return;
    std::error_code ec;
    root_ = fs::canonical(root, ec);
    CANDELA_CHECK(!ec && fs::is_directory(root_), flag_, " '", root, "' is not a folder.");
  }
  bool configured() const { return !root_.empty(); }
  const fs::path& root() const { return root_; }

  // The file (or folder) an id names; 400 for ids that leave the folder, 404 for missing ones.
  fs::path resolve(const std::string& id, bool allow_directory = false) const {
    if (!configured()) fail(404, "this server has no " + what_ + " folder (start it with " + flag_ + " DIR).");
    if (id.empty()) fail(400, "the " + what_ + " id is empty.");
    if (id.find('\0') != std::string::npos || id.find('\\') != std::string::npos)
      fail(400, "the " + what_ + " id '" + id + "' holds a character ids may not use.");
    if (id.front() == '/') fail(400, "the " + what_ + " id '" + id + "' is an absolute path; give a path inside the " + flag_ + " folder.");
    const std::string l = lower(id);
    if (l.find("%2e") != std::string::npos || l.find("%2f") != std::string::npos || l.find("%5c") != std::string::npos)
      fail(400, "the " + what_ + " id '" + id + "' holds a percent-encoded path character.");
    for (const auto& part : fs::path(id))
      if (part == "..") fail(400, "the " + what_ + " id '" + id + "' leaves the " + flag_ + " folder ('..').");
    std::error_code ec;
    const fs::path p = fs::weakly_canonical(root_ / id, ec);
    if (ec || !inside(p)) fail(400, "the " + what_ + " id '" + id + "' leaves the " + flag_ + " folder.");
    if (!fs::exists(p, ec)) fail(404, "no " + what_ + " '" + id + "'.");
    if (!allow_directory && !fs::is_regular_file(p, ec)) fail(404, "the " + what_ + " '" + id + "' is not a file.");
    return p;
  }

  // Every file under the folder whose name `keep` accepts, as ids; links that leave are skipped.
  template <class Keep>
  std::vector<std::pair<std::string, fs::path>> list(Keep keep) const {
    std::vector<std::pair<std::string, fs::path>> out;
    if (!configured()) return out;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(root_, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it.depth() > 8) {
        it.disable_recursion_pending();
        continue;
      }
      const fs::path canonical = fs::weakly_canonical(it->path(), ec);
      if (ec || !inside(canonical) || !fs::is_regular_file(canonical)) continue;
      const std::string id = fs::relative(it->path(), root_).generic_string();
      if (keep(id)) out.emplace_back(id, canonical);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  bool inside(const fs::path& p) const {
    const std::string root = root_.string() + "/", s = p.string();
    return s.rfind(root, 0) == 0 && s.size() > root.size();
  }
  std::string what_, flag_;
  fs::path root_;
};

// ---- jobs ----------------------------------------------------------------------------------

bool terminal(const std::string& state) {
  return state == "done" || state == "error" || state == "cancelled" || state == "interrupted";
}

struct Job {
  std::string id, kind, key, state = "queued", error, model, method;
  json request;  // what the client asked, with ids (no server paths)
  bool cached = false;
  double created = 0, started = 0, finished = 0;
  std::string stage;
  int64_t done = 0, total = 0;
  double remaining = -1;  // evaluate reports its own estimate
  CancelToken cancel;
  ExplainJob explain;
  EvaluateJob evaluate;
  AuditJob audit;
  ReportJob report;
  VisualizeJob visualize;

  json to_json() const {
    json j = {{"id", id},         {"kind", kind},     {"state", state},     {"key", key},
              {"model", model},   {"cached", cached}, {"created", created}, {"request", request}};
    if (!method.empty()) j["method"] = method;
    if (started > 0) j["started"] = started;
    if (finished > 0) j["finished"] = finished;
    if (!error.empty()) j["error"] = error;
    if (state == "done") j["result"] = key;
    const double fraction = state == "done" ? 1.0 : total > 0 ? static_cast<double>(done) / total : 0.0;
    j["progress"] = {{"stage", stage}, {"done", done}, {"total", total}, {"fraction", fraction}};
    if (state == "running") {
      double eta = remaining;
      if (eta < 0 && fraction > 0) eta = (now_seconds() - started) * (1 - fraction) / fraction;
      j["eta_seconds"] = eta >= 0 ? json(eta) : json(nullptr);
    }
    return j;
  }
};

class Server {
 public:
  explicit Server(const ServerOptions& o)
      : o_(o), models_("model", "--models", o.models), data_("data", "--data", o.data), results_(fs::absolute(o.results)) {
    CANDELA_CHECK(!o.models.empty(), "candela serve needs --models DIR (the model files it may load).");
    CANDELA_CHECK(o.workers >= 1 && o.workers <= 256, "--workers must be in [1, 256], got ", o.workers, ".");
    CANDELA_CHECK(o.queue >= 0, "--queue must be >= 0, got ", o.queue, ".");
    CANDELA_CHECK(o.port >= 0 && o.port <= 65535, "--port must be in [0, 65535], got ", o.port, ".");
    CANDELA_CHECK(is_loopback_host(o.host) || !o.token.empty(), "refusing to listen on '", o.host,
                  "' without --token: any machine that reaches it could run jobs and read results. Give --token "
                  "SECRET (clients send 'Authorization: Bearer SECRET') or bind 127.0.0.1.");
    CANDELA_CHECK(o.max_upload_bytes > 0 && o.max_steps > 0 && o.max_samples > 0 && o.max_rows > 0,
                  "the request limits must be > 0.");
    const int total = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    threads_per_worker_ = std::max(1, total / o.workers);
    for (int i = 1; i < o.workers; ++i) model_slots_.release();
    for (const char* sub : {"jobs", "r", "uploads", "tmp"}) fs::create_directories(results_ / sub);
    recover();
  }

  // cpp-httplib 0.11 listens with a backlog of 5 (compiled into Debian's library): past five
  // connections arriving at once, the kernel drops the handshake's last packet and clients see
  // failed reads. listen() again on the bound socket raises it.
  struct HttpServer : httplib::Server {
    void raise_backlog() { ::listen(svr_sock_, SOMAXCONN); }
  };

  void run() {
    HttpServer svr;
    svr.new_task_queue = [n = std::max(4, o_.http_threads)] { return new httplib::ThreadPool(n); };
    // Base64 makes an upload 4/3 larger; the JSON around it is small. Past this, httplib answers 413.
    svr.set_payload_max_length(static_cast<size_t>(o_.max_upload_bytes / 3 * 4 + (1 << 20)));
    routes(svr);
    int port = o_.port;
    if (port == 0) {
      port = svr.bind_to_any_port(o_.host);
      if (port < 0) throw IoError("cannot listen on " + o_.host + " (an ephemeral port).");
    } else if (!svr.bind_to_port(o_.host, port)) {
      throw IoError("cannot listen on " + o_.host + ":" + std::to_string(port) + " (in use, or not an address of this machine).");
    }
    svr.raise_backlog();
    at::set_num_threads(threads_per_worker_);
    for (int i = 0; i < o_.workers; ++i) workers_.emplace_back([this] { work(); });
    std::thread watcher([this, &svr] {
      while (!o_.stop.cancelled() && !stopping_) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      shutdown();
      svr.stop();
    });
    const std::string host = o_.host.find(':') != std::string::npos && o_.host.front() != '[' ? "[" + o_.host + "]" : o_.host;
    std::cout << "candela: serving on http://" << host << ":" << port << "/ (" << o_.workers << " worker"
              << (o_.workers > 1 ? "s" : "") << ", " << threads_per_worker_ << " thread"
              << (threads_per_worker_ > 1 ? "s" : "") << " each)" << std::endl;
    svr.listen_after_bind();
    stopping_ = true;
    watcher.join();
    for (auto& w : workers_) w.join();
  }

 private:
  // ---- the store -----------------------------------------------------------------------------

  fs::path record_path(const std::string& id) const { return results_ / "jobs" / (id + ".json"); }
  fs::path result_dir(const std::string& key) const { return results_ / "r" / key; }

  // Called with mu_ held. Written to a temporary file and renamed, without fsync: a record must
  // survive the server's death (kill -9: the kernel keeps the data), and a job's state changes
  // too often to pay a disk flush each time (about 5 ms on an ordinary disk). After a power cut
  // a record may be lost or empty; recover() skips it, and the results themselves are flushed.
  void persist(const Job& job) {
    try {
      json j = job.to_json();
      j.erase("eta_seconds");
      write_unsynced(record_path(job.id), j.dump(2) + "\n");
    } catch (const std::exception& e) {
      std::cerr << "candela serve: cannot save the record of job " << job.id << ": " << one_line(e.what()) << "\n";
    }
  }

  static void write_unsynced(const fs::path& path, const std::string& bytes) {
    const fs::path tmp = path.string() + ".tmp" + random_hex(4);
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      if (!out.flush()) {
        std::error_code ec;
        fs::remove(tmp, ec);
        throw IoError("cannot write '" + tmp.string() + "'.");
      }
    }
    fs::rename(tmp, path);
  }

  // A result folder: every file written, then all flushed to disk (one journal commit covers
  // them, instead of one per file), the folder too, then renamed into place by the caller.
  static void write_synced_folder(const fs::path& dir, const std::vector<Artifact>& files) {
    fs::create_directories(dir);
    for (const auto& a : files) {
      if (a.name.empty() || a.name.find('/') != std::string::npos || a.name[0] == '.')
        throw InternalError("an artifact name that is not a plain file name: '" + a.name + "'.");
      std::ofstream out(dir / a.name, std::ios::binary | std::ios::trunc);
      out.write(a.bytes.data(), static_cast<std::streamsize>(a.bytes.size()));
      if (!out.flush()) throw IoError("cannot write '" + (dir / a.name).string() + "'.");
    }
    for (const auto& a : files) sync_path(dir / a.name, O_RDONLY);
    sync_path(dir, O_RDONLY | O_DIRECTORY);
  }
  static void sync_path(const fs::path& p, int flags) {
    const int fd = ::open(p.c_str(), flags);
    if (fd < 0) throw IoError("cannot open '" + p.string() + "' to flush it.");
    const bool ok = ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) throw IoError("cannot flush '" + p.string() + "' to disk.");
  }

  // After a restart (or a kill -9): every record back in memory; what was queued or running is
  // interrupted unless its result folder made it (the rename is the commit); temporary folders go.
  void recover() {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(results_ / "tmp", ec)) fs::remove_all(e.path(), ec);
    for (const auto& e : fs::directory_iterator(results_ / "jobs", ec)) {
      if (e.path().extension() != ".json") continue;
      try {
        const json j = json::parse(read_file(e.path().string(), 16 << 20));
        auto job = std::make_shared<Job>();
        job->id = j.at("id");
        job->kind = j.at("kind");
        job->key = j.at("key");
        job->state = j.at("state");
        job->model = j.value("model", "");
        job->method = j.value("method", "");
        job->error = j.value("error", "");
        job->request = j.value("request", json::object());
        job->cached = j.value("cached", false);
        job->created = j.value("created", 0.0);
        job->started = j.value("started", 0.0);
        job->finished = j.value("finished", 0.0);
        if (j.contains("progress")) {
          job->stage = j["progress"].value("stage", "");
          job->done = j["progress"].value("done", int64_t{0});
          job->total = j["progress"].value("total", int64_t{0});
        }
        if (!terminal(job->state)) {
          if (fs::exists(result_dir(job->key) / "meta.json")) {
            job->state = "done";
          } else {
            job->state = "interrupted";
            job->error = "the server stopped before this job finished; submit it again.";
          }
          job->finished = now_seconds();
          persist(*job);
        }
        jobs_[job->id] = job;
      } catch (const std::exception& ex) {
        std::cerr << "candela serve: skipping the unreadable job record " << e.path() << ": " << one_line(ex.what()) << "\n";
      }
    }
  }

  // The SHA-256 of a file's content, remembered by path, size and modification time.
  std::string file_hash(const fs::path& p) {
    std::error_code ec;
    const auto size = fs::file_size(p, ec);
    const auto mtime = fs::last_write_time(p, ec).time_since_epoch().count();
    const std::string stamp = std::to_string(size) + ":" + std::to_string(mtime);
    {
      std::lock_guard<std::mutex> lock(hash_mu_);
      auto it = hashes_.find(p.string());
      if (it != hashes_.end() && it->second.first == stamp) return it->second.second;
    }
    Sha256 h;
    std::ifstream in(p, std::ios::binary);
    if (!in) throw IoError("cannot read '" + p.string() + "'.");
    std::vector<char> buf(1 << 20);
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      h.update(buf.data(), static_cast<size_t>(in.gcount()));
    }
    const std::string hex = h.hex();
    std::lock_guard<std::mutex> lock(hash_mu_);
    hashes_[p.string()] = {stamp, hex};
    return hex;
  }
  // A folder of images: the hashes of its files, by name.
  std::string path_hash(const fs::path& p) {
    if (!fs::is_directory(p)) return file_hash(p);
    Sha256 h;
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(p)) if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) h.update(fs::relative(f, p).generic_string() + "=" + file_hash(f) + "\n");
    return h.hex();
  }

  // ---- request -> job ------------------------------------------------------------------------

  // An upload, checked with the readers the CLI uses, stored once under uploads/ by its hash.
  fs::path store_upload(const std::string& bytes, const std::string& kind) {
    if (static_cast<int64_t>(bytes.size()) > o_.max_upload_bytes)
      fail(413, "the uploaded " + kind + " is " + std::to_string(bytes.size()) + " bytes, over the limit of " +
                    std::to_string(o_.max_upload_bytes) + " bytes (--max-upload).");
    std::string ext;
    if (kind == "npy") {
      check_rows(parse_npy(bytes, "the uploaded npy"), "the uploaded npy");
      ext = ".npy";
    } else if (kind == "csv") {
      const Table t = parse_csv(bytes, "the uploaded csv");
      check_rows_count(t.values.size(0), "the uploaded csv");
      ext = ".csv";
    } else if (kind == "text") {
      check_text(bytes, "the uploaded text");
      ext = ".txt";
    } else {
      ext = bytes.rfind("\xff\xd8", 0) == 0 ? ".jpg" : bytes.rfind("BM", 0) == 0 ? ".bmp" : ".png";
    }
    const fs::path p = results_ / "uploads" / (sha256(bytes) + ext);
    if (!fs::exists(p)) write_file_atomic(p.string(), bytes);
    return p;
  }
  void check_rows_count(int64_t rows, const std::string& what) {
    if (rows > o_.max_rows)
      fail(422, what + " has " + std::to_string(rows) + " rows, over the limit of " + std::to_string(o_.max_rows) +
                    " per request (--max-rows).");
  }
  // Text for a token model: one text per non-empty line, as `candela explain --input FILE.txt` reads it.
  void check_text(const std::string& text, const std::string& what) {
    if (text.find('\0') != std::string::npos) fail(400, what + " holds a NUL byte; send UTF-8 text, one text per line.");
    int64_t lines = 0;
    for (const auto& line : detail::split(text, '\n'))
      if (!line.empty() && line != "\r") ++lines;
    if (lines == 0) fail(400, what + " holds no text; send one text per line.");
    check_rows_count(lines, what);
  }
  void check_rows(const at::Tensor& t, const std::string& what) { check_rows_count(t.dim() >= 2 ? t.size(0) : 1, what); }
  // The rows of a .npy file from its header alone (the file may be large): the first dimension
  // of a shape with two or more, else 1. Malformed headers are left to the reader at run time.
  static int64_t npy_rows(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::string head(4096, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(in.gcount()));
    const auto at = head.find("'shape':");
    if (at == std::string::npos) return 1;
    const auto open = head.find('(', at), close = head.find(')', at);
    if (open == std::string::npos || close == std::string::npos) return 1;
    const std::string dims = head.substr(open + 1, close - open - 1);
    int parts = 0;
    for (const auto& d : detail::split(dims, ','))
      if (d.find_first_of("0123456789") != std::string::npos) ++parts;
    return parts >= 2 ? std::atoll(dims.c_str()) : 1;
  }

  // {"data": ID} | {"npy": BASE64} | {"image": BASE64} | {"csv": TEXT} | {"text": TEXT} -> a file path, and
  // what to record.
  std::pair<fs::path, json> resolve_input(const json& in) {
    if (!in.is_object() || in.size() != 1)
      fail(400, "input must be one of {\"data\": SAMPLE_ID}, {\"npy\": BASE64}, {\"image\": BASE64}, {\"csv\": TEXT} or "
                "{\"text\": TEXT}, got " +
                    in.dump().substr(0, 200) + ".");
    const std::string kind = in.begin().key();
    if (!in.begin().value().is_string()) fail(400, "input." + kind + " must be a string.");
    const std::string v = in.begin().value().get<std::string>();
    if (kind == "data") {
      const fs::path p = data_.resolve(v);
      const std::string k = data_kind(v);
      if (k == "npy") check_rows_count(npy_rows(p), "the sample '" + v + "'");
      if (k == "text") check_text(read_file(p.string(), o_.max_upload_bytes), "the sample '" + v + "'");
      return {p, {{"data", v}}};
    }
    if (kind != "npy" && kind != "image" && kind != "csv" && kind != "text")
      fail(400, "unknown input kind '" + kind + "': give data, npy, image, csv or text.");
    if (static_cast<int64_t>(v.size()) > o_.max_upload_bytes / 3 * 4 + 8)
      fail(413, "the uploaded " + kind + " is larger than the limit of " + std::to_string(o_.max_upload_bytes) +
                    " bytes (--max-upload).");
    const std::string bytes = kind == "csv" || kind == "text" ? v : base64_decode(v, "input." + kind);
    const fs::path p = store_upload(bytes, kind);
    return {p, {{"upload", p.filename().string()}}};
  }

  // Method options past the server's limits: 422 naming the limit.
  void check_limits(const json& options, const std::string& where) {
    if (!options.is_object()) return;
    for (const auto& [key, value] : options.items()) {
      if (value.is_object()) {
        check_limits(value, where + "." + key);
        continue;
      }
      if (!value.is_number()) continue;
      const bool steps = key == "n_steps" || key == "max_steps";
      const bool samples = !steps && key.size() >= 7 && key.compare(key.size() - 7, 7, "samples") == 0 &&
                           key != "min_samples_leaf";
      if (!steps && !samples) continue;
      const double limit = static_cast<double>(steps ? o_.max_steps : o_.max_samples);
      if (value.get<double>() > limit)
        fail(422, where + "." + key + " = " + value.dump() + " is over this server's limit of " +
                      std::to_string(steps ? o_.max_steps : o_.max_samples) + " (--max-" +
                      (steps ? "steps" : "samples") + ").");
    }
  }

  fs::path model_file(const std::string& id) const {
    const fs::path p = models_.resolve(id);
    if (!is_model_file(id)) fail(400, "the model '" + id + "' is not a model file (.pt, .pth, .ts, .onnx).");
    return p;
  }

  // Fields that name files on the CLI name samples under --data here.
  std::string data_file(const std::string& field, const std::string& value, json& files) {
    fs::path p;
    try {
      p = data_.resolve(value);
    } catch (const HttpError& e) {
      fail(e.status, "\"" + field + "\": " + e.what());  // which field named it
    }
    files[field] = file_hash(p);
    return p.string();
  }

  // A mask file and each forward argument's file are samples under --data too.
  void resolve_forward_args(std::string& mask, std::vector<std::string>& args, json& files) {
    if (mask.size() > 4 && lower(mask).compare(mask.size() - 4, 4, ".npy") == 0) mask = data_file("mask", mask, files);
    for (auto& a : args) {
      const auto eq = a.find('=');
      if (eq == std::string::npos) fail(400, "\"forward_args\": each is NAME=FILE.npy, got '" + a + "'.");
      a = a.substr(0, eq + 1) + data_file("forward_args." + a.substr(0, eq), a.substr(eq + 1), files);
    }
  }

  void resolve_file_fields(ExplainJob& job, json& files) {
    if (!job.background.empty()) job.background = data_file("background", job.background, files);
    if (!job.training_data.empty()) job.training_data = data_file("training_data", job.training_data, files);
    const auto ends = [](const std::string& s, const char* e) {
      const std::string t = e;
      return s.size() > t.size() && lower(s).compare(s.size() - t.size(), t.size(), t) == 0;
    };
    if (ends(job.baseline, ".npy")) {
      const bool dist = job.baseline.rfind("dist:", 0) == 0;
      job.baseline = (dist ? "dist:" : "") + data_file("baseline", job.baseline.substr(dist ? 5 : 0), files);
    }
    if (ends(job.features, ".npy")) job.features = data_file("features", job.features, files);
    if (ends(job.feature_names, ".txt")) job.feature_names = data_file("feature_names", job.feature_names, files);
    if (ends(job.composite, ".json")) job.composite = data_file("composite", job.composite, files);
    resolve_forward_args(job.mask, job.forward_args, files);
    if (job.device != "cpu" && job.device.rfind("cuda", 0) != 0) fail(400, "device must be cpu, cuda or cuda:N.");
  }

  static json parse_body(const httplib::Request& req) {
    json body;
    try {
      body = json::parse(req.body);
    } catch (const json::parse_error& e) {
      fail(400, std::string("the request body is not valid JSON: ") + e.what());
    }
    if (!body.is_object()) fail(400, "the request body must be a JSON object, got " + body.dump().substr(0, 100) + ".");
    return body;
  }
  static std::string take_string(json& body, const std::string& key, const std::string& what) {
    if (!body.contains(key)) fail(400, what + " needs \"" + key + "\".");
    if (!body[key].is_string()) fail(400, what + ": \"" + key + "\" must be a string.");
    std::string v = body[key];
    body.erase(key);
    return v;
  }

  // The head of a request on one input (explain, report): the body as sent (kept as the job's
  // record), the fields the server chooses refused, "model" resolved to its file and "input" taken
  // out (resolve_input makes it a path once the rest of the request is checked).
  struct OneInputRequest {
    json body, request, input;
    std::string model_id;
    fs::path model;
  };
  OneInputRequest one_input_request(const httplib::Request& req, const std::string& what,
                                    std::initializer_list<const char*> server_fields) {
    OneInputRequest r;
    r.body = parse_body(req);
    r.request = r.body;
    for (const char* k : server_fields)
      if (r.body.contains(k)) fail(400, "the " + what + " request: \"" + k + "\" is chosen by the server; drop it.");
    r.model_id = take_string(r.body, "model", "the " + what + " request");
    if (!r.body.contains("input")) fail(400, "the " + what + " request needs \"input\".");
    r.input = r.body["input"];
    r.model = model_file(r.model_id);
    r.body["model"] = r.model.string();
    r.body["input"] = "";
    return r;
  }

  // The cache key of a job on one input: the model's and the input's contents by hash, never
  // server paths, and the rest of the job as canonical JSON (nlohmann's objects keep their keys
  // sorted, so equal jobs dump equal text) less the fields the server chose and the files hashed.
  std::string one_input_key(const std::string& kind, json keyed, std::initializer_list<const char*> server_fields,
                            const fs::path& model, const fs::path& input, const json& files) {
    for (const char* k : {"model", "input"}) keyed.erase(k);
    for (const char* k : server_fields) keyed.erase(k);
    for (const auto& [field, hash] : files.items()) keyed.erase(field);
    return sha256(json{{"kind", kind}, {"model", file_hash(model)}, {"input", file_hash(input)}, {"job", keyed},
                       {"files", files}}
                      .dump());
  }

  std::shared_ptr<Job> explain_job(const httplib::Request& req) {
    auto [body, request, input, model_id, model] = one_input_request(req, "explain", {"out"});
    auto job = std::make_shared<Job>();
    job->kind = "explain";
    job->explain = job_from_json<ExplainJob>(body, "the explain request");
    check_limits(job->explain.options, "options");
    auto [input_path, input_record] = resolve_input(input);
    job->explain.input = input_path.string();
    json files = json::object();
    resolve_file_fields(job->explain, files);
    validate(job->explain);
    job->key = one_input_key("explain", job_to_json(job->explain), {"out"}, model, input_path, files);
    job->model = model_id;
    job->method = job->explain.method;
    job->request = request;
    job->request["input"] = input_record;
    return job;
  }

  std::shared_ptr<Job> evaluate_job(const httplib::Request& req) {
    json body = parse_body(req);
    const json request = body;
    if (body.contains("out")) fail(400, "the evaluate request: \"out\" is chosen by the server; drop it.");
    const std::string model_id = take_string(body, "model", "the evaluate request");
    // "data" names a sample (a file or a folder) under --data, or is an input as explain takes it
    // ({"npy": BASE64}, {"image": BASE64}, {"csv": TEXT}): the web UI's checks on one sample.
    fs::path data;
    if (body.contains("data") && body["data"].is_object()) {
      data = resolve_input(body["data"]).first;
      body.erase("data");
    } else {
      data = data_.resolve(take_string(body, "data", "the evaluate request"), /*allow_directory=*/true);
    }
    const fs::path model = model_file(model_id);
    json files = {{"data", path_hash(data)}};
    body["model"] = model.string();
    body["data"] = data.string();
    for (const char* k : {"labels", "masks"})
      if (body.contains(k) && body[k].is_string() && !body[k].get<std::string>().empty()) {
        const fs::path p = data_.resolve(body[k].get<std::string>());
        files[k] = file_hash(p);
        body[k] = p.string();
      }
    auto job = std::make_shared<Job>();
    job->kind = "evaluate";
    job->evaluate = job_from_json<EvaluateJob>(body, "the evaluate request");
    EvaluateJob& e = job->evaluate;
    resolve_forward_args(e.mask, e.forward_args, files);
    check_limits(e.method_options, "method_options");
    check_limits(e.metric_options, "metric_options");
    if (e.max_samples == 0) e.max_samples = o_.max_eval_samples;
    if (e.max_samples > o_.max_eval_samples)
      fail(422, "max_samples = " + std::to_string(e.max_samples) + " is over this server's limit of " +
                    std::to_string(o_.max_eval_samples) + " (--max-eval-samples).");
    if (e.bootstrap > 100000) fail(422, "bootstrap = " + std::to_string(e.bootstrap) + " is over this server's limit of 100000.");
    validate(e);
    json keyed = job_to_json(e);
    for (const char* k : {"model", "data", "labels", "masks", "out"}) keyed.erase(k);
    job->key = sha256(json{{"kind", "evaluate"}, {"model", file_hash(model)}, {"job", keyed}, {"files", files}}.dump());
    job->model = model_id;
    job->request = request;
    return job;
  }

  // `candela report` on one input: a job whose result holds report.html (or report.md and PNGs)
  // and report.json. The page's template is the web UI's that this server serves.
  std::shared_ptr<Job> report_job(const httplib::Request& req) {
    auto [body, request, input, model_id, model] = one_input_request(req, "report", {"out", "web"});
    auto job = std::make_shared<Job>();
    job->kind = "report";
    job->report = job_from_json<ReportJob>(body, "the report request");
    ReportJob& r = job->report;
    check_limits(r.method_options, "method_options");
    if (r.max_samples > o_.max_rows)
      fail(422, "max_samples = " + std::to_string(r.max_samples) + " is over this server's limit of " +
                    std::to_string(o_.max_rows) + " (--max-rows).");
    auto [input_path, input_record] = resolve_input(input);
    r.input = input_path.string();
    if (!o_.static_dir.empty() && fs::exists(fs::path(o_.static_dir) / "report.html")) r.web = o_.static_dir;
    json files = json::object();
    const auto ends = [](const std::string& s, const char* e) {
      const std::string t = e;
      return s.size() > t.size() && lower(s).compare(s.size() - t.size(), t.size(), t) == 0;
    };
    if (ends(r.baseline, ".npy")) r.baseline = data_file("baseline", r.baseline, files);
    if (ends(r.features, ".npy")) r.features = data_file("features", r.features, files);
    validate(r);
    job->key = one_input_key("report", job_to_json(r), {"out", "web"}, model, input_path, files);
    job->model = model_id;
    job->request = request;
    job->request["input"] = input_record;
    return job;
  }

  // `candela audit` on a data set under --data: one job, its result audit.json.
  std::shared_ptr<Job> audit_job(const httplib::Request& req) {
    json body = parse_body(req);
    const json request = body;
    if (body.contains("out")) fail(400, "the audit request: \"out\" is chosen by the server; drop it.");
    const std::string model_id = take_string(body, "model", "the audit request");
    const fs::path model = model_file(model_id);
    const fs::path data = data_.resolve(take_string(body, "data", "the audit request"), /*allow_directory=*/true);
    json files = {{"data", path_hash(data)}};
    body["model"] = model.string();
    body["data"] = data.string();
    if (body.contains("labels") && body["labels"].is_string() && !body["labels"].get<std::string>().empty()) {
      const fs::path p = data_.resolve(body["labels"].get<std::string>());
      files["labels"] = file_hash(p);
      body["labels"] = p.string();
    }
    auto job = std::make_shared<Job>();
    job->kind = "audit";
    job->audit = job_from_json<AuditJob>(body, "the audit request");
    AuditJob& a = job->audit;
    check_limits(a.options, "options");
    if (a.max_samples == 0) a.max_samples = o_.max_eval_samples;
    if (a.max_samples > o_.max_eval_samples)
      fail(422, "max_samples = " + std::to_string(a.max_samples) + " is over this server's limit of " +
                    std::to_string(o_.max_eval_samples) + " (--max-eval-samples).");
    json keyed = job_to_json(a);
    for (const char* k : {"model", "data", "labels", "out"}) keyed.erase(k);
    job->key = sha256(json{{"kind", "audit"}, {"model", file_hash(model)}, {"job", keyed}, {"files", files}}.dump());
    job->model = model_id;
    job->method = a.method;
    job->request = request;
    return job;
  }

  // `candela visualize` as a job: its result is visualization.json beside the PNGs. "data" (dataset
  // examples) and "maco_spectrum" name samples (a file or a folder) under --data.
  std::shared_ptr<Job> visualize_job(const httplib::Request& req) {
    json body = parse_body(req);
    const json request = body;
    if (body.contains("out")) fail(400, "the visualize request: \"out\" is chosen by the server; drop it.");
    const std::string model_id = take_string(body, "model", "the visualize request");
    const fs::path model = model_file(model_id);
    body["model"] = model.string();
    json files = json::object();
    for (const char* k : {"data", "maco_spectrum"})
      if (body.contains(k) && body[k].is_string() && !body[k].get<std::string>().empty()) {
        const fs::path p = data_.resolve(body[k].get<std::string>(), /*allow_directory=*/true);
        files[k] = path_hash(p);
        body[k] = p.string();
      }
    auto job = std::make_shared<Job>();
    job->kind = "visualize";
    job->visualize = job_from_json<VisualizeJob>(body, "the visualize request");
    const VisualizeJob& v = job->visualize;
    v.options.validate();
    const FeatureVisualizationOptions o = v.options.resolved();
    if (o.steps > o_.max_steps)
      fail(422, "steps = " + std::to_string(o.steps) + " is over this server's limit of " + std::to_string(o_.max_steps) +
                    " (--max-steps).");
    const int64_t images = o.batch * (o.param == "maco" ? std::max<int64_t>(o.maco_crops, 1) : 1);
    if (images > o_.max_samples)
      fail(422, "batch x crops = " + std::to_string(images) + " is over this server's limit of " +
                    std::to_string(o_.max_samples) + " (--max-samples).");
    json keyed = job_to_json(v);
    for (const char* k : {"model", "data", "maco_spectrum", "out"}) keyed.erase(k);
    job->key = sha256(json{{"kind", "visualize"}, {"model", file_hash(model)}, {"job", keyed}, {"files", files}}.dump());
    job->model = model_id;
    job->request = request;
    return job;
  }

  // Cache hit, the same job already queued or running, 429, or queued.
  std::pair<int, json> submit(std::shared_ptr<Job> job) {
    std::unique_lock<std::mutex> lock(mu_);
    job->id = random_hex(8);
    job->created = now_seconds();
    if (fs::exists(result_dir(job->key) / "meta.json")) {
      job->state = "done";
      job->cached = true;
      job->finished = job->created;
      jobs_[job->id] = job;
      persist(*job);
      return {200, job->to_json()};
    }
    auto same = inflight_.find(job->key);
    if (same != inflight_.end()) {
      json j = jobs_.at(same->second)->to_json();
      j["deduplicated"] = true;
      return {202, j};
    }
    if (stopping_) fail(503, "the server is stopping.");
    if (static_cast<int>(queue_.size()) >= o_.queue)
      fail(429, "the queue is full (" + std::to_string(o_.queue) + " jobs waiting, --queue); retry later.");
    jobs_[job->id] = job;
    inflight_[job->key] = job->id;
    queue_.push_back(job->id);
    persist(*job);
    changed_.notify_all();
    return {202, job->to_json()};
  }

  std::shared_ptr<Job> find_job(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) fail(404, "no job '" + id + "'.");
    return it->second;
  }

  // ---- workers -------------------------------------------------------------------------------

  void work() {
    at::set_num_threads(threads_per_worker_);
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        changed_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (stopping_) return;
        job = jobs_.at(queue_.front());
        queue_.pop_front();
        job->state = "running";
        job->started = now_seconds();
        persist(*job);
        changed_.notify_all();
      }
      std::string state = "done", error;
      try {
        execute(*job);
      } catch (const Cancelled&) {
        state = stopping_ ? "interrupted" : "cancelled";
      } catch (const Error& e) {
        state = "error";
        error = one_line(e.what());
      } catch (const c10::Error& e) {
        state = "error";
        error = one_line(e.what_without_backtrace());
      } catch (const std::exception& e) {
        state = "error";
        error = one_line(e.what());
      } catch (...) {
        state = "error";
        error = "an unknown error stopped the job.";
      }
      std::lock_guard<std::mutex> lock(mu_);
      job->state = state;
      job->error = error;
      job->finished = now_seconds();
      inflight_.erase(job->key);
      persist(*job);
      changed_.notify_all();
      // Idle: the memory the CLI keeps for its batches goes back to the system between jobs.
      if (queue_.empty()) release_freed_memory();
    }
  }

  void on_progress(Job& job, const std::string& stage, int64_t done, int64_t total, double remaining) {
    std::lock_guard<std::mutex> lock(mu_);
    job.stage = stage;
    job.done = done;
    job.total = total;
    job.remaining = remaining;
    changed_.notify_all();
  }

  // Runs the job and commits its result folder: written under tmp/, renamed into r/KEY.
  void execute(Job& job) {
    RunControl control;
    control.cancel = job.cancel;
    control.progress = [this, &job](const Progress& p) { on_progress(job, p.stage, p.done, p.total, -1); };
    control.evaluate_progress = [this, &job](const EvaluateProgress& p) {
      on_progress(job, p.stage, p.done, p.total, p.remaining_seconds);
    };
    const fs::path tmp = results_ / "tmp" / (job.key + "." + job.id);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::string> names;
    try {
      std::vector<Artifact> files;
      if (job.kind == "explain") {
        files = candela::run(job.explain, control).artifacts;
      } else if (job.kind == "report") {
        ReportJob r = job.report;
        r.out.clear();
        ReportResult rr = candela::run(r, control);
        files = rr.artifacts;
        // report.json: what the page shows, for GET /api/results/{key} (the md format has it already).
        if (r.format == "html") files.push_back(render_json("report.json", rr.data));
      } else if (job.kind == "visualize") {
        VisualizeJob v = job.visualize;
        v.out.clear();
        files = candela::run(v, control).artifacts;
      } else if (job.kind == "audit") {
        AuditJob a = job.audit;
        a.out.clear();
        files.push_back({"audit.json", "application/json", candela::run(a, control).dump(2) + "\n"});
      } else {
        EvaluateJob e = job.evaluate;
        e.out = (tmp.string() + ".evaluate");  // evaluate writes its own files (and journal)
        candela::run(e, control);
        for (const auto& f : fs::directory_iterator(e.out))
          files.push_back({f.path().filename().string(), "", slurp(f.path())});
        std::error_code ec;
        fs::remove_all(e.out, ec);
        std::sort(files.begin(), files.end(), [](const Artifact& a, const Artifact& b) { return a.name < b.name; });
      }
      for (const auto& a : files) names.push_back(a.name);
      const json meta = {{"key", job.key},
                         {"kind", job.kind},
                         {"model", job.model},
                         {"method", job.method},
                         {"request", job.request},
                         {"files", names},
                         {"created", now_seconds()},
                         {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
      files.push_back({"meta.json", "application/json", meta.dump(2) + "\n"});
      write_synced_folder(tmp, files);
      std::error_code ec;
      fs::rename(tmp, result_dir(job.key), ec);
      if (!ec) sync_path(results_ / "r", O_RDONLY | O_DIRECTORY);
      if (ec) {
        // The same result committed by another job meanwhile: keep that one.
        if (!fs::exists(result_dir(job.key) / "meta.json")) throw IoError("cannot store the result: " + ec.message());
        fs::remove_all(tmp, ec);
      }
    } catch (...) {
      std::error_code ec;
      fs::remove_all(tmp, ec);
      fs::remove_all(tmp.string() + ".evaluate", ec);
      throw;
    }
  }

  void shutdown() {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (auto& [id, job] : jobs_) {
      if (job->state == "queued") {
        job->state = "interrupted";
        job->error = "the server stopped before this job ran; submit it again.";
        job->finished = now_seconds();
        persist(*job);
      } else if (job->state == "running") {
        job->cancel.cancel();
      }
    }
    queue_.clear();
    changed_.notify_all();
  }

  // ---- results -------------------------------------------------------------------------------

  fs::path result_file(const std::string& key, const std::string& name) {
    const fs::path dir = result_dir(key);
    if (!fs::exists(dir / "meta.json")) fail(404, "no result '" + key + "'.");
    const fs::path p = dir / name;
    if (!fs::is_regular_file(p)) fail(404, "the result '" + key + "' has no " + name + ".");
    return p;
  }
  static std::string slurp(const fs::path& p) { return read_file(p.string(), size_t{1} << 31); }

  static const char* media_type(const std::string& name) {
    const std::string e = extension(name);
    if (e == ".json") return "application/json";
    if (e == ".png") return "image/png";
    if (e == ".npy") return "application/octet-stream";
    if (e == ".csv") return "text/csv";
    if (e == ".md") return "text/markdown; charset=utf-8";
    if (e == ".html") return "text/html; charset=utf-8";
    if (e == ".jsonl") return "application/jsonl";
    return "application/octet-stream";
  }

  // ---- routes --------------------------------------------------------------------------------

  // httplib compresses with brotli at quality 11 whenever a client accepts "br" (every browser
  // does): 1.6 s for the web UI's 590 KB script and 40 ms for a 6 KB JSON answer on this 2-core
  // machine. Without "br" it uses gzip (zlib's default level: 40 ms and 5 ms).
  static void drop_brotli(httplib::Request& req) {
    auto it = req.headers.find("Accept-Encoding");
    if (it == req.headers.end()) return;
    std::string kept;
    std::stringstream in(it->second);
    for (std::string token; std::getline(in, token, ',');) {
      const auto b = token.find_first_not_of(' ');
      if (b == std::string::npos || token.compare(b, 2, "br") == 0) continue;
      kept += (kept.empty() ? "" : ", ") + token.substr(b);
    }
    it->second = kept;
  }

  static void send_json(httplib::Response& res, const json& j, int status = 200) {
    res.status = status;
    res.set_content(j.dump(), "application/json");
  }

  void routes(httplib::Server& svr) {
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      drop_brotli(const_cast<httplib::Request&>(req));  // the server's own request object, not const
      if (req.path.rfind("/api", 0) != 0 || o_.token.empty()) return httplib::Server::HandlerResponse::Unhandled;
      if (req.method == "OPTIONS" && !o_.cors.empty()) return httplib::Server::HandlerResponse::Unhandled;
      const std::string given = req.get_header_value("Authorization");
      if (!equal_constant_time(given, "Bearer " + o_.token)) {
        res.set_header("WWW-Authenticate", "Bearer");
        send_json(res, {{"error", "this server needs 'Authorization: Bearer TOKEN' (the --token it was started with)."}}, 401);
        add_cors(res);
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    svr.set_post_routing_handler([this](const httplib::Request&, httplib::Response& res) { add_cors(res); });
    svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      int status = 500;
      std::string message = "unknown error";
      try {
        std::rethrow_exception(ep);
      } catch (const HttpError& e) {
        status = e.status;
        message = e.what();
      } catch (const InternalError& e) {
        message = "internal error (a bug in Candela; please report it): " + one_line(e.what());
      } catch (const IoError& e) {
        status = 400;
        message = one_line(e.what());
      } catch (const Error& e) {
        status = 400;  // InvalidArgument, ParseError, ShapeMismatch, UnsupportedModel: the request's fault
        message = one_line(e.what());
      } catch (const c10::Error& e) {
        status = 400;
        message = one_line(e.what_without_backtrace());
      } catch (const json::exception& e) {
        status = 400;  // a field of the wrong JSON type somewhere below the job's own checks
        message = one_line(e.what());
      } catch (const std::exception& e) {
        message = one_line(e.what());
      }
      if (status == 429) res.set_header("Retry-After", "2");
      send_json(res, {{"error", message}}, status);
    });
    svr.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      std::string message;
      if (res.status == 413)
        message = "the request body is larger than this server's limit of " +
                  std::to_string(o_.max_upload_bytes / 3 * 4 + (1 << 20)) + " bytes (uploads up to " +
                  std::to_string(o_.max_upload_bytes) + " bytes, --max-upload).";
      else if (res.status == 404)
        message = "no such endpoint: " + req.method + " " + req.path + " (see GET /api).";
      else
        message = "HTTP " + std::to_string(res.status);
      send_json(res, {{"error", message}}, res.status);
    });
    if (!o_.cors.empty())
      svr.Options(R"(/api/.*)", [](const httplib::Request&, httplib::Response& res) {
        res.status = 204;
        res.set_header("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS");
        res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
        res.set_header("Access-Control-Max-Age", "600");
      });

    svr.Get("/api", [this](const httplib::Request&, httplib::Response& res) { send_json(res, index_json()); });
    svr.Get("/api/schema", [](const httplib::Request&, httplib::Response& res) {
      send_json(res, {{"explain", job_schema<ExplainJob>()}, {"evaluate", job_schema<EvaluateJob>()}, {"audit", job_schema<AuditJob>()}, {"report", job_schema<ReportJob>()},
                      {"visualize", job_schema<VisualizeJob>()}, {"predict", job_schema<PredictJob>()}});
    });
    svr.Get("/api/methods", [](const httplib::Request&, httplib::Response& res) {
      send_json(res, Registry::builtin().to_json());
    });
    svr.Get("/api/metrics", [](const httplib::Request&, httplib::Response& res) {
      send_json(res, MetricRegistry::builtin().to_json());
    });
    svr.Get("/api/models", [this](const httplib::Request&, httplib::Response& res) {
      json out = json::array();
      for (const auto& [id, path] : models_.list([](const std::string& id) { return is_model_file(id); })) {
        json m = {{"id", id}, {"format", extension(id) == ".onnx" ? "onnx" : "torchscript"}, {"bytes", fs::file_size(path)}};
        fs::path sidecar = path;
        sidecar.replace_extension(".json");
        m["sidecar"] = fs::exists(sidecar) ? json(fs::relative(sidecar, models_.root()).generic_string()) : json(nullptr);
        out.push_back(m);
      }
      send_json(res, out);
    });
    svr.Get(R"(/api/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      const std::string id = req.matches[1];
      const fs::path p = model_file(id);
      const std::string hash = file_hash(p);
      {
        std::lock_guard<std::mutex> lock(info_mu_);
        auto it = info_.find(hash);
        if (it != info_.end()) {
          json j = it->second;
          j["model"] = id;
          return send_json(res, j);
        }
      }
      InfoJob job;
      job.model = p.string();
      json j = with_model_slot([&] { return candela::run(job); });
      j["model"] = id;
      std::lock_guard<std::mutex> lock(info_mu_);
      info_[hash] = j;
      send_json(res, j);
    });
    svr.Get("/api/data", [this](const httplib::Request&, httplib::Response& res) {
      json out = json::array();
      for (const auto& [id, path] : data_.list([](const std::string& id) { return !data_kind(id).empty(); })) {
        json d = {{"id", id}, {"kind", data_kind(id)}, {"bytes", fs::file_size(path)}};
        if (d["kind"] == "image") d["thumbnail"] = "/api/data/" + id + "/thumbnail.png";
        out.push_back(d);
      }
      send_json(res, out);
    });
    svr.Get(R"(/api/data/(.+)/thumbnail\.png)", [this](const httplib::Request& req, httplib::Response& res) {
      const std::string id = req.matches[1];
      const fs::path p = data_.resolve(id);
      if (data_kind(id) != "image") fail(404, "'" + id + "' is not an image; only images have thumbnails.");
      const at::Tensor img = load_image(p.string(), 3, 96, 96);  // [3, 96, 96] in [0, 1]
      const at::Tensor u8 = (img * 255).round().clamp(0, 255).to(at::kByte).permute({1, 2, 0}).contiguous();
      res.set_content(encode_png(u8), "image/png");
    });
    // The sample's file itself, for a client that draws it or edits it (the web UI's what-if).
    svr.Get(R"(/api/data/(.+)/file)", [this](const httplib::Request& req, httplib::Response& res) {
      const std::string id = req.matches[1];
      const fs::path p = data_.resolve(id);
      if (data_kind(id).empty()) fail(404, "'" + id + "' is not a sample (image, .npy, .csv or .txt).");
      res.set_content(slurp(p), media_type(p.filename().string()));
    });
    svr.Get(R"(/api/data/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      const std::string id = req.matches[1];
      const fs::path p = data_.resolve(id);
      const std::string kind = data_kind(id);
      json d = {{"id", id}, {"kind", kind}, {"bytes", fs::file_size(p)}};
      if (kind == "npy") {
        const at::Tensor t = read_npy(p.string());
        d["shape"] = t.sizes().vec();
        d["dtype"] = std::string(c10::toString(t.scalar_type()));
      } else if (kind == "csv") {
        const Table t = read_csv(p.string());
        d["columns"] = t.columns;
        d["rows"] = t.values.size(0);
      } else if (kind == "image") {
        d["thumbnail"] = "/api/data/" + id + "/thumbnail.png";
      }
      send_json(res, d);
    });
    svr.Post("/api/predict", [this](const httplib::Request& req, httplib::Response& res) {
      json body = parse_body(req);
      const std::string model_id = take_string(body, "model", "the predict request");
      if (!body.contains("input")) fail(400, "the predict request needs \"input\".");
      const json input = body["input"];
      body.erase("input");
      body["model"] = model_file(model_id).string();
      body["input"] = resolve_input(input).first.string();
      PredictJob job = job_from_json<PredictJob>(body, "the predict request");
      if (job.top_k > 1000) fail(422, "top_k is over this server's limit of 1000.");
      json out = with_model_slot([&] { return candela::run(job); });
      out["model"] = model_id;
      send_json(res, out);
    });
    svr.Post("/api/explain", [this](const httplib::Request& req, httplib::Response& res) {
      auto [status, j] = submit(explain_job(req));
      send_json(res, j, status);
    });
    svr.Post("/api/evaluate", [this](const httplib::Request& req, httplib::Response& res) {
      auto [status, j] = submit(evaluate_job(req));
      send_json(res, j, status);
    });
    svr.Post("/api/report", [this](const httplib::Request& req, httplib::Response& res) {
      auto [status, j] = submit(report_job(req));
      send_json(res, j, status);
    });
    svr.Post("/api/audit", [this](const httplib::Request& req, httplib::Response& res) {
      auto [status, j] = submit(audit_job(req));
      send_json(res, j, status);
    });
    svr.Post("/api/visualize", [this](const httplib::Request& req, httplib::Response& res) {
      auto [status, j] = submit(visualize_job(req));
      send_json(res, j, status);
    });
    svr.Get("/api/jobs", [this](const httplib::Request&, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(mu_);
      std::vector<std::shared_ptr<Job>> all;
      for (const auto& [id, job] : jobs_) all.push_back(job);
      std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a->created > b->created; });
      json out = json::array();
      for (size_t i = 0; i < all.size() && i < 200; ++i) out.push_back(all[i]->to_json());
      send_json(res, out);
    });
    svr.Get(R"(/api/jobs/([0-9a-f]+))", [this](const httplib::Request& req, httplib::Response& res) {
      auto job = find_job(req.matches[1]);
      std::lock_guard<std::mutex> lock(mu_);
      send_json(res, job->to_json());
    });
    svr.Delete(R"(/api/jobs/([0-9a-f]+))", [this](const httplib::Request& req, httplib::Response& res) {
      auto job = find_job(req.matches[1]);
      std::lock_guard<std::mutex> lock(mu_);
      if (terminal(job->state)) fail(409, "job " + job->id + " is already " + job->state + "; nothing to cancel.");
      if (job->state == "queued") {
        queue_.erase(std::remove(queue_.begin(), queue_.end(), job->id), queue_.end());
        inflight_.erase(job->key);
        job->state = "cancelled";
        job->finished = now_seconds();
        persist(*job);
        changed_.notify_all();
        return send_json(res, job->to_json());
      }
      job->cancel.cancel();  // the worker stops at the next batch and records "cancelled"
      json j = job->to_json();
      j["cancel_requested"] = true;
      send_json(res, j, 202);
    });
    svr.Get(R"(/api/jobs/([0-9a-f]+)/events)", [this](const httplib::Request& req, httplib::Response& res) {
      auto job = find_job(req.matches[1]);
      auto last = std::make_shared<std::string>();
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider("text/event-stream", [this, job, last](size_t, httplib::DataSink& sink) {
        std::unique_lock<std::mutex> lock(mu_);
        for (;;) {
          const json j = job->to_json();
          json key = j;  // what counts as news: everything but the ETA, which moves with the clock
          key.erase("eta_seconds");
          const std::string now = key.dump();
          if (terminal(job->state)) {
            lock.unlock();
            const std::string e = "event: " + std::string(job->state == "interrupted" ? "error" : job->state) +
                                  "\ndata: " + j.dump() + "\n\n";
            sink.write(e.data(), e.size());
            sink.done();
            return true;
          }
          if (now != *last) {
            *last = now;
            lock.unlock();
            const std::string e = "event: " + std::string(job->state == "queued" ? "queued" : "progress") +
                                  "\ndata: " + j.dump() + "\n\n";
            return sink.write(e.data(), e.size());
          }
          if (stopping_) {
            lock.unlock();
            sink.done();
            return true;
          }
          if (changed_.wait_for(lock, std::chrono::seconds(15)) == std::cv_status::timeout) {
            lock.unlock();
            static const std::string ping = ": keep-alive\n\n";
            return sink.write(ping.data(), ping.size());
          }
        }
      });
    });
    svr.Get(R"(/api/results/([0-9a-f]{64}))", [this](const httplib::Request& req, httplib::Response& res) {
      const std::string key = req.matches[1];
      const json meta = json::parse(slurp(result_file(key, "meta.json")));
      const std::string kind = meta.value("kind", "");
      const std::string name = kind == "evaluate" ? "results.json"
                               : kind == "audit"  ? "audit.json"
                               : kind == "report" ? "report.json"
                               : kind == "visualize" ? "visualization.json"
                                                  : "attribution.json";
      res.set_content(slurp(result_file(key, name)), "application/json");
    });
    svr.Get(R"(/api/results/([0-9a-f]{64})/meta)", [this](const httplib::Request& req, httplib::Response& res) {
      res.set_content(slurp(result_file(req.matches[1], "meta.json")), "application/json");
    });
    svr.Get(R"(/api/results/([0-9a-f]{64})/values)", [this](const httplib::Request& req, httplib::Response& res) {
      const fs::path p = result_file(req.matches[1], "attributions.npy");
      if (req.get_param_value("format") == "npy") return res.set_content(slurp(p), "application/octet-stream");
      if (req.has_param("format") && req.get_param_value("format") != "raw")
        fail(400, "format must be raw (the default) or npy.");
      const at::Tensor t = read_npy(p.string()).to(at::kFloat).contiguous();
      std::string shape;
      for (auto s : t.sizes()) shape += (shape.empty() ? "" : ",") + std::to_string(s);
      res.set_header("X-Shape", shape);
      res.set_header("X-Dtype", "float32-le");
      res.set_content(std::string(static_cast<const char*>(t.data_ptr()), t.numel() * sizeof(float)),
                      "application/octet-stream");
    });
    svr.Get(R"(/api/results/([0-9a-f]{64})/heatmap\.png)", [this](const httplib::Request& req, httplib::Response& res) {
      const std::string key = req.matches[1];
      const fs::path dir = result_dir(key);
      const fs::path p = fs::exists(dir / "heatmap.png") ? dir / "heatmap.png" : dir / "heatmap_0.png";
      res.set_content(slurp(result_file(key, p.filename().string())), "image/png");
    });
    svr.Get(R"(/api/results/([0-9a-f]{64})/files/([A-Za-z0-9_][A-Za-z0-9_.-]*))",
            [this](const httplib::Request& req, httplib::Response& res) {
              const std::string name = req.matches[2];
              res.set_content(slurp(result_file(req.matches[1], name)), media_type(name));
            });

    // The web UI's files when there are some, else a one-page index of the API.
    fs::path web = o_.static_dir;
    if (web.empty()) {
      std::error_code ec;
      const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
      for (const fs::path& c : {exe.parent_path() / "../share/candela/web", exe.parent_path() / "../../web/dist"})
        if (!ec && fs::exists(c / "index.html")) {
          web = c;
          break;
        }
    }
    if (!web.empty()) {
      CANDELA_CHECK(fs::is_directory(web), "--static '", web.string(), "' is not a folder.");
      svr.set_mount_point("/", web.string());
    } else {
      svr.Get("/", [this](const httplib::Request&, httplib::Response& res) { res.set_content(index_html(), "text/html; charset=utf-8"); });
    }
  }

  // Runs `f` (a model call in an HTTP thread) once one of `workers` slots is free.
  template <class F>
  json with_model_slot(F f) {
    model_slots_.acquire();
    struct Release {
      std::counting_semaphore<256>& s;
      ~Release() { s.release(); }
    } release{model_slots_};
    at::set_num_threads(threads_per_worker_);
    return f();
  }

  void add_cors(httplib::Response& res) const {
    if (o_.cors.empty()) return;
    res.set_header("Access-Control-Allow-Origin", o_.cors);
    res.set_header("Vary", "Origin");
    res.set_header("Access-Control-Expose-Headers", "X-Shape, X-Dtype, Retry-After");
  }

  static const std::vector<std::pair<std::string, std::string>>& endpoints() {
    static const std::vector<std::pair<std::string, std::string>> e = {
        {"GET /api", "this list"},
        {"GET /api/schema", "the fields of explain, evaluate, audit, report, visualize and predict requests"},
        {"GET /api/models", "model files under --models"},
        {"GET /api/models/{id}", "a model's input, classes and layers"},
        {"GET /api/methods", "attribution methods with their option schemas"},
        {"GET /api/metrics", "evaluation metrics with their option schemas"},
        {"GET /api/data", "samples under --data"},
        {"GET /api/data/{id}", "a sample's shape or columns"},
        {"GET /api/data/{id}/thumbnail.png", "an image sample, 96x96"},
        {"POST /api/predict", "top-k classes for one input"},
        {"POST /api/explain", "queue an explanation: a job"},
        {"POST /api/evaluate", "queue an evaluation: a job"},
        {"POST /api/audit", "queue a shortcut audit of a data set: a job"},
        {"POST /api/report", "queue a report (`candela report`): a job; its file is /api/results/{key}/files/report.html"},
        {"POST /api/visualize", "queue a feature visualisation (`candela visualize`): a job; its images are files of the result"},
        {"GET /api/jobs", "recent jobs"},
        {"GET /api/jobs/{id}", "a job's state, progress, ETA, error"},
        {"GET /api/jobs/{id}/events", "server-sent events: progress, then done, error or cancelled"},
        {"DELETE /api/jobs/{id}", "cancel a job"},
        {"GET /api/results/{key}",
         "attribution.json (explain), results.json (evaluate), audit.json (audit), report.json (report) or "
         "visualization.json (visualize)"},
        {"GET /api/results/{key}/values", "raw float32 little-endian, shape in X-Shape; ?format=npy"},
        {"GET /api/results/{key}/heatmap.png", "the heatmap over the input"},
        {"GET /api/results/{key}/files/{name}", "any file of the result (meta.json lists them)"},
    };
    return e;
  }
  json index_json() const {
    json e = json::object();
    for (const auto& [route, what] : endpoints()) e[route] = what;
    return {{"name", "candela"}, {"endpoints", e}, {"docs", "docs/api.md"}};
  }
  std::string index_html() const {
    std::string rows;
    for (const auto& [route, what] : endpoints()) rows += "<tr><td><code>" + route + "</code></td><td>" + what + "</td></tr>\n";
    return "<!doctype html><html><head><meta charset=\"utf-8\"><title>Candela API</title>"
           "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto}td{padding:.2em 1em}</style></head>"
           "<body><h1>Candela</h1><p>The engine's HTTP API (the web UI is not installed). Every <code>/api</code> call "
           "answers JSON; errors are <code>{\"error\": \"...\"}</code>. See docs/api.md.</p><table>\n" +
           rows + "</table></body></html>\n";
  }

  ServerOptions o_;
  Folder models_, data_;
  fs::path results_;
  int threads_per_worker_ = 1;

  std::mutex mu_;  // jobs_, queue_, inflight_, every Job's state
  std::condition_variable changed_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;
  std::deque<std::string> queue_;
  std::map<std::string, std::string> inflight_;  // key -> job id, queued or running
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> workers_;

  std::mutex hash_mu_;
  std::map<std::string, std::pair<std::string, std::string>> hashes_;  // path -> (size:mtime, sha256)
  std::counting_semaphore<256> model_slots_{1};  // predict and info run the model in the HTTP thread: `workers` at once
  std::mutex info_mu_;
  std::map<std::string, json> info_;  // model hash -> info
};

}  // namespace

void serve(const ServerOptions& options) {
  Server server(options);
  server.run();
}

}  // namespace candela
