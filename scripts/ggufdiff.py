#!/usr/bin/env python3
"""GGUF-aware byte comparison: `ggufdiff.py OURS.gguf GOLDEN.gguf` prints BYTE-IDENTICAL, or the first differing
metadata key (and array element), tensor info (name, dims, type, offset) and tensor data (byte within the tensor).
Standard library only; a development aid for matching llama.cpp's files (exit status 1 when they differ)."""
import struct
import sys

SCALAR = {0: 'B', 1: 'b', 2: 'H', 3: 'h', 4: 'I', 5: 'i', 6: 'f', 7: '?', 10: 'Q', 11: 'q', 12: 'd'}


def read(path):
    b = open(path, 'rb').read()
    pos = [0]

    def u(fmt):
        v = struct.unpack_from('<' + fmt, b, pos[0])[0]
        pos[0] += struct.calcsize('<' + fmt)
        return v

    def s():
        n = u('Q')
        v = b[pos[0]:pos[0] + n]
        pos[0] += n
        return v

    def val(t):
        if t == 8:
            return s()
        if t == 9:
            at, n = u('I'), u('Q')
            return [val(at) for _ in range(n)]
        return u(SCALAR[t])

    if b[:4] != b'GGUF':
        sys.exit(f'{path}: not a GGUF file')
    pos[0] = 4
    u('I')
    n_tensors, n_kv = u('Q'), u('Q')
    kv = []
    for _ in range(n_kv):
        k = s().decode()
        t = u('I')
        kv.append((k, t, val(t)))
    tensors = []
    for _ in range(n_tensors):
        name = s().decode()
        dims = [u('Q') for _ in range(u('I'))]
        tensors.append((name, dims, u('I'), u('Q')))
    align = next((v for k, t, v in kv if k == 'general.alignment'), 32)
    data = (pos[0] + align - 1) // align * align
    return b, kv, tensors, data


def tensor_bytes(f, t):
    later = sorted(x[3] for x in f[2] if x[3] > t[3])
    end = f[3] + later[0] if later else len(f[0])
    return f[0][f[3] + t[3]:end]


def main():
    a, g = read(sys.argv[1]), read(sys.argv[2])
    if a[0] == g[0]:
        print('BYTE-IDENTICAL')
        return 0
    for i in range(max(len(a[1]), len(g[1]))):
        x = a[1][i] if i < len(a[1]) else None
        y = g[1][i] if i < len(g[1]) else None
        if x != y:
            show = lambda z: None if z is None else (z[0], z[1], f'array[{len(z[2])}]' if isinstance(z[2], list) else z[2])
            print(f'first key difference at #{i}: ours {show(x)}, golden {show(y)}')
            if x and y and x[0] == y[0] and isinstance(x[2], list) and isinstance(y[2], list):
                j = next((j for j, (p, q) in enumerate(zip(x[2], y[2])) if p != q), None)
                if j is not None:
                    print(f'  element {j}: ours {x[2][j]!r}, golden {y[2][j]!r}')
            break
    for i in range(max(len(a[2]), len(g[2]))):
        x = a[2][i] if i < len(a[2]) else None
        y = g[2][i] if i < len(g[2]) else None
        if x != y:
            print(f'first tensor-info difference at #{i}: ours {x}, golden {y}')
            break
    for x, y in zip(a[2], g[2]):
        if x[0] != y[0]:
            break
        da, dg = tensor_bytes(a, x), tensor_bytes(g, y)
        if da != dg:
            j = next((k for k in range(min(len(da), len(dg))) if da[k] != dg[k]), min(len(da), len(dg)))
            print(f'first tensor-data difference: {x[0]} at byte {j} ({len(da)} vs {len(dg)} bytes)')
            break
    print(f'sizes: ours {len(a[0])}, golden {len(g[0])}')
    return 1


if __name__ == '__main__':
    sys.exit(main())
