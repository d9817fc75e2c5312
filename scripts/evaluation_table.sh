#!/usr/bin/env bash
# Regenerates the tables of docs/evaluation.md: every method x metric on the ground-truth
# sets of scripts/make_groundtruth.py, and the shortcut audit. Prints Markdown on stdout.
#
#   make build && scripts/evaluation_table.sh [BUILD_DIR] > /tmp/tables.md
#
# Runs are kept in BUILD_DIR/evaluation/ and resumed if interrupted (delete it to start over).
set -euo pipefail
build=${1:-build}
cli=$build/bin/candela
gt=$build/groundtruth
out=$build/evaluation
[ -x "$cli" ] || { echo "evaluation_table.sh: build first ($cli is missing)" >&2; exit 1; }
[ -f "$gt/manifest.json" ] || /usr/bin/python3 scripts/make_groundtruth.py --out "$gt" >&2
mkdir -p "$out"

echo "### Planted patterns (100 test images, class = which pattern; masks = the pattern's pixels)"
echo
"$cli" evaluate --quiet --model "$gt/patterns/model.pt" --data "$gt/patterns/x_test.npy" \
  --labels "$gt/patterns/y_test.npy" --masks "$gt/patterns/masks_test.npy" --max-samples 100 --chunk 10 \
  --methods saliency,input_x_gradient,integrated_gradients,noise_tunnel,grad_cam,guided_backprop,deep_lift,lrp,occlusion \
  --method-option grad_cam.layers=conv3 --method-option noise_tunnel.stdevs=0.15 \
  --method-option occlusion.sliding_window_shapes=1,4,4 --method-option occlusion.strides=1,2,2 \
  --metrics pointing_game,relevance_mass_accuracy,relevance_rank_accuracy,deletion,insertion,faithfulness_correlation,model_parameter_randomisation,random_logit,sparseness,max_sensitivity \
  --metric-option faithfulness_correlation.subset_size=64 --metric-option max_sensitivity.nr_samples=5 \
  --metric-option max_sensitivity.lower_bound=0.05 --out "$out/patterns"
cat "$out/patterns/summary.md"
echo

echo "### Tabular (100 rows, 10 features, only x0, x4, x7 matter; masks = those three)"
echo
"$cli" evaluate --quiet --model "$gt/tabular/model.pt" --data "$gt/tabular/x_test.npy" \
  --masks "$gt/tabular/masks_test.npy" --max-samples 100 --chunk 20 --baseline "dist:$gt/tabular/background.npy" \
  --methods saliency,input_x_gradient,expected_gradients,deep_lift_shap,kernel_shap,lime,exact_shapley \
  --method-option expected_gradients.n_samples=200 --method-option kernel_shap.n_samples=256 \
  --method-option lime.num_samples=1000 \
  --metrics relevance_rank_accuracy,faithfulness_correlation,comprehensiveness,sufficiency,infidelity,sparseness \
  --metric-option faithfulness_correlation.subset_size=3 --metric-option comprehensiveness.fractions=0.3 \
  --metric-option relevance_rank_accuracy.abs=true \
  --metric-option sufficiency.fractions=0.3 --metric-option comprehensiveness.softmax=false \
  --metric-option sufficiency.softmax=false --out "$out/tabular"
cat "$out/tabular/summary.md"
echo

echo "Error against the exact Shapley values of the trained model (model_shap.npy), mean |a - phi| over 100 rows:"
echo
echo "| method | mean abs error | max abs error |"
echo "|---|---|---|"
for m in kernel_shap exact_shapley deep_lift_shap lime; do
  opts=()
  [ $m = kernel_shap ] && opts=(--option n_samples=256)
  [ $m = lime ] && opts=(--option num_samples=1000)
  "$cli" explain --quiet --model "$gt/tabular/model.pt" --input "$gt/tabular/x_test.npy" --target 0 \
    --background "$gt/tabular/background.npy" --method $m "${opts[@]}" --out "$out/tab_$m" >&2
  /usr/bin/python3 -c "
import numpy as np
a = np.load('$out/tab_$m/attributions.npy'); b = np.load('$gt/tabular/model_shap.npy')
print('| $m | %.4f | %.4f |' % (np.abs(a - b).mean(), np.abs(a - b).max()))"
done
echo

echo "### Shortcut set (watermark at rows 1-3, columns 1-3; on half the test images, independent of the label)"
echo
echo "| method | flagged window | relevance share (area 1.6%) | samples over 5x area | suspected |"
echo "|---|---|---|---|---|"
for m in integrated_gradients input_x_gradient saliency grad_cam lrp; do
  opts=()
  [ $m = grad_cam ] && opts=(--option layers=conv3)
  "$cli" audit --quiet --model "$gt/shortcut/model.pt" --data "$gt/shortcut/x_test.npy" --method $m "${opts[@]}" \
    --out "$out/audit_$m"
  /usr/bin/python3 -c "
import json
j = json.load(open('$out/audit_$m/audit.json')); w = j['window']
print('| $m | rows %d-%d, cols %d-%d | %.1f%% | %.0f%% | %s |' % (w['y0'], w['y1'] - 1, w['x0'], w['x1'] - 1,
      100 * j['mean_relevance_share'], 100 * j['fraction_over_factor'], 'yes' if j['suspected'] else 'no'))"
done
