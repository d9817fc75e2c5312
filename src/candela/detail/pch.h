// Precompiled header for the library and everything that reuses its PCH.
// Only heavy, stable third-party headers belong here.
#pragma once
#include <torch/script.h>
#include <torch/csrc/autograd/autograd.h>
#include <nlohmann/json.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>
