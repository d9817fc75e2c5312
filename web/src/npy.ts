// Reading and writing NumPy .npy files (format versions 1 to 3, little-endian, C order).
export interface NdArray {
  shape: number[];
  data: Float32Array;
}

export function parseNpy(buf: ArrayBuffer): NdArray {
  const u8 = new Uint8Array(buf);
  const magic = String.fromCharCode(...u8.slice(1, 6));
  if (u8[0] !== 0x93 || magic !== "NUMPY") throw new Error("not a .npy file (bad magic)");
  const major = u8[6];
  const view = new DataView(buf);
  const hlen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const hstart = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(u8.slice(hstart, hstart + hlen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*True/.test(header);
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? "";
  const shape = shapeText.split(",").map((s) => s.trim()).filter((s) => s.length).map(Number);
  if (!descr) throw new Error(".npy header has no dtype");
  if (fortran) throw new Error(".npy in Fortran order is not supported; save it in C order");
  const n = shape.reduce((a, b) => a * b, 1);
  const off = hstart + hlen;
  const out = new Float32Array(n);
  const kind = descr.slice(1);
  const le = descr[0] !== ">";
  const size: Record<string, number> = { f4: 4, f8: 8, i8: 8, i4: 4, i2: 2, i1: 1, u1: 1, b1: 1, u2: 2, u4: 4 };
  const s = size[kind];
  if (!s) throw new Error(`.npy dtype ${descr} is not supported`);
  for (let i = 0; i < n; i++) {
    const o = off + i * s;
    switch (kind) {
      case "f4": out[i] = view.getFloat32(o, le); break;
      case "f8": out[i] = view.getFloat64(o, le); break;
      case "i8": out[i] = Number(view.getBigInt64(o, le)); break;
      case "i4": out[i] = view.getInt32(o, le); break;
      case "i2": out[i] = view.getInt16(o, le); break;
      case "u2": out[i] = view.getUint16(o, le); break;
      case "u4": out[i] = view.getUint32(o, le); break;
      case "i1": out[i] = view.getInt8(o); break;
      default: out[i] = u8[o];
    }
  }
  return { shape, data: out };
}

export function writeNpy(a: NdArray): Uint8Array {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${a.shape.join(", ")}${a.shape.length === 1 ? "," : ""}), }`;
  const total = 10 + header.length + 1;
  header += " ".repeat((64 - (total % 64)) % 64) + "\n";
  const out = new Uint8Array(10 + header.length + a.data.length * 4);
  out.set([0x93, 78, 85, 77, 80, 89, 1, 0]);
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  out.set(new Uint8Array(a.data.buffer, a.data.byteOffset, a.data.length * 4), 10 + header.length);
  return out;
}

/** Row `i` of an array [N, ...] as an array [1, ...]. */
export function row(a: NdArray, i: number): NdArray {
  const per = a.shape.slice(1).reduce((x, y) => x * y, 1);
  return { shape: [1, ...a.shape.slice(1)], data: a.data.slice(i * per, (i + 1) * per) };
}

export function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
