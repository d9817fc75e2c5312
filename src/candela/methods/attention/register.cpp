#include "candela/core/registry.h"
#include "candela/methods/attention/attention_flow.h"
#include "candela/methods/attention/attention_rollout.h"
#include "candela/methods/attention/grad_attention_rollout.h"

namespace candela {

void register_attention_methods(Registry& r) {
  r.add<AttentionRollout>();
  r.add<GradAttentionRollout>();
  r.add<AttentionFlow>();
}

}  // namespace candela
