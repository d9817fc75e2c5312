// Umbrella header: the whole public API.
#pragma once

#include "candela/core/attribution.h"
#include "candela/core/baseline.h"
#include "candela/core/batching.h"
#include "candela/core/error.h"
#include "candela/core/explainer.h"
#include "candela/core/model.h"
#include "candela/core/options.h"
#include "candela/core/progress.h"
#include "candela/core/registry.h"
#include "candela/core/target.h"
#include "candela/methods/gradient/gradient_shap.h"
#include "candela/methods/gradient/input_x_gradient.h"
#include "candela/methods/gradient/integrated_gradients.h"
#include "candela/methods/gradient/noise_tunnel.h"
#include "candela/methods/gradient/saliency.h"
