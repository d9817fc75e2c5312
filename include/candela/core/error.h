// Errors: the library reports every failure by throwing a candela::Error (or a subclass).
// It never aborts, prints or exits; front ends map the type to an exit code, an HTTP
// status or a Python exception. Messages name the offending value and say how to fix it.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace candela {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A user-supplied argument or option is invalid (unknown method, bad value, NaN input).
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// The model file cannot be used (not TorchScript, unsupported outputs, ...).
class UnsupportedModel : public Error {
 public:
  using Error::Error;
};

// A tensor's shape does not match what the model or the method expects.
class ShapeMismatch : public Error {
 public:
  using Error::Error;
};

// A file's content cannot be parsed (JSON, NPY, image, ...).
class ParseError : public Error {
 public:
  using Error::Error;
};

// A file cannot be read or written.
class IoError : public Error {
 public:
  using Error::Error;
};

// The caller cancelled a running explanation.
class Cancelled : public Error {
 public:
  using Error::Error;
};

// An invariant of Candela's own code failed: a bug, not the user's fault (CANDELA_ASSERT).
// Front ends say so and ask for a report: the CLI exits 70, the server answers 500.
class InternalError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// The closest candidates to `name` (edit distance), formatted as " Did you mean 'a' or 'b'?"
// or "" when nothing is close. Used by every "unknown name" error.
std::string did_you_mean(const std::string& name, const std::vector<std::string>& candidates);

}  // namespace candela

// Throws ExceptionType with the concatenated message when `cond` is false.
#define CANDELA_CHECK_T(ExceptionType, cond, ...)                          \
  do {                                                                     \
    if (!(cond)) throw ExceptionType(::candela::detail::str_cat(__VA_ARGS__)); \
  } while (0)
#define CANDELA_CHECK(cond, ...) CANDELA_CHECK_T(::candela::InvalidArgument, cond, __VA_ARGS__)

// An internal invariant: when `cond` is false, throws InternalError with the message and the
// source location. For conditions no input should be able to break; use CANDELA_CHECK for
// anything a user can cause.
#define CANDELA_ASSERT(cond, ...)                                                                    \
  do {                                                                                               \
    if (!(cond))                                                                                     \
      throw ::candela::InternalError(::candela::detail::str_cat(                                     \
          "internal check failed: " #cond " (", __FILE__, ":", __LINE__, "): ", __VA_ARGS__));       \
  } while (0)
