#!/usr/bin/env bash
# The demo: explains three test digits with five methods side by side and writes an HTML
# page that shows them. Run through `make demo`.
set -euo pipefail
build=${1:-build}
cli="$build/bin/candela"
fix="$build/fixtures"
out=demo-output
methods=(saliency input_x_gradient integrated_gradients noise_tunnel gradient_shap grad_cam)
rm -rf "$out.tmp" && mkdir -p "$out.tmp"

"$cli" info "$fix/digits_cnn.pt"
echo
for d in 0 1 2; do
  for m in "${methods[@]}"; do
    opts=()
    case $m in
      noise_tunnel) opts=(--option nt_samples=25 --option stdevs=0.15 --option base_method=integrated_gradients) ;;
      gradient_shap) opts=(--option n_samples=50 --baseline uniform:0,1) ;;
    esac
    "$cli" explain --quiet --model "$fix/digits_cnn.pt" --input "$fix/digit_$d.png" --method "$m" \
      "${opts[@]}" --out "$out.tmp/digit_$d/$m"
  done
  cp "$fix/digit_$d.png" "$out.tmp/digit_$d/input.png"
done

# The shapes CNN (build/demo, scripts/make_demo.py): one picture of each class.
shape_methods=(saliency integrated_gradients grad_cam guided_grad_cam)
shapes=()
if [ -f "$build/demo/manifest.json" ]; then
  for c in circle square triangle cross; do
    img=$(ls "$build/demo/data/shapes/$c"/*.png | head -1)
    shapes+=("$c")
    for m in "${shape_methods[@]}"; do
      "$cli" explain --quiet --model "$build/demo/models/shapes_cnn.pt" --input "$img" --method "$m" --out "$out.tmp/shape_$c/$m"
    done
    cp "$img" "$out.tmp/shape_$c/input.png"
  done
fi

# The text model (a small BERT-like sentiment classifier): four reviews, three methods; the
# gradient one explains the token embedding (`tok`), since token ids have no gradient.
text_methods=(layer_integrated_gradients attention_rollout occlusion)
if [ -f "$build/demo/data/reviews.txt" ]; then
  mkdir -p "$out.tmp/text"
  head -4 "$build/demo/data/reviews.txt" > "$out.tmp/text/reviews.txt"
  for m in "${text_methods[@]}"; do
    layer=()
    [ "$m" = layer_integrated_gradients ] && layer=(--layer tok)
    "$cli" explain --quiet --model "$build/demo/models/text_bert.pt" --input "$out.tmp/text/reviews.txt" --method "$m" \
      "${layer[@]}" --out "$out.tmp/text/$m"
  done
fi

{
  echo '<!doctype html><meta charset="utf-8"><title>Candela demo</title>'
  echo '<style>body{font-family:sans-serif;margin:2em}td{text-align:center;padding:6px;font-size:13px}img{width:160px;image-rendering:pixelated}</style>'
  echo '<h1>Candela: why did the digits CNN say that?</h1>'
  echo '<p>Each row is a test digit, each column a method explaining the predicted class (red: evidence for, blue: against; Grad-CAM shows its 0..1 map of the last convolutional block).</p><table><tr><th>input</th>'
  for m in "${methods[@]}"; do echo "<th>$m</th>"; done
  echo '</tr>'
  for d in 0 1 2; do
    pred=$(grep -A1 '"targets"' "$out.tmp/digit_$d/saliency/attribution.json" | tail -1 | tr -dc '0-9')
    echo "<tr><td><img src=\"digit_$d/input.png\"><br>predicted $pred</td>"
    for m in "${methods[@]}"; do echo "<td><img src=\"digit_$d/$m/heatmap_raw.png\"></td>"; done
    echo '</tr>'
  done
  echo '</table>'
  if [ ${#shapes[@]} -gt 0 ]; then
    echo '<h2>A shapes CNN: the evidence sits on the shape, not on the textured background</h2><table><tr><th>input</th>'
    for m in "${shape_methods[@]}"; do echo "<th>$m</th>"; done
    echo '</tr>'
    for c in "${shapes[@]}"; do
      echo "<tr><td><img src=\"shape_$c/input.png\"><br>$c</td>"
      for m in "${shape_methods[@]}"; do echo "<td><img src=\"shape_$c/$m/heatmap.png\"></td>"; done
      echo '</tr>'
    done
    echo '</table>'
  fi
  if [ -f "$out.tmp/text/reviews.txt" ]; then
    echo '<h2>A text model: which words decide the sentiment</h2>'
    for m in "${text_methods[@]}"; do echo "<h3>$m</h3><iframe src=\"text/$m/tokens.html\" title=\"$m\" width=\"960\" height=\"260\"></iframe>"; done
  fi
} > "$out.tmp/index.html"
rm -rf "$out" && mv "$out.tmp" "$out"

echo "Demo done. Open $out/index.html to see 3 digits x ${#methods[@]} methods side by side."
echo "Each $out/digit_N/METHOD/ folder holds attributions.npy, attribution.json, heatmap.png and heatmap_raw.png."
echo
echo "The interactive web UI on the demo's shapes CNN and pictures, the breast-cancer MLP and the text model:"
echo "  make serve      (then open http://127.0.0.1:8080/)"
