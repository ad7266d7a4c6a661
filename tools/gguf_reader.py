"""Small GGUF reader (versions 2 and 3), numpy only.

    r = GGUFReader("model.gguf")
    r.metadata["llama.block_count"]          # python values; arrays of numbers are numpy arrays
    r.metadata_types["llama.block_count"]    # GGUF value type id (arrays: (9, elem_type))
    r.tensors["blk.0.attn_q.weight"]         # TensorInfo(name, ne, type, offset, nbytes)
    r.raw("token_embd.weight")               # uint8 memmap view of the stored bytes
    r.tensor("token_embd.weight")            # float32 numpy array, numpy order (ne reversed)
"""

import struct
import sys
import os
from collections import OrderedDict, namedtuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_writer as gw  # noqa: E402

TensorInfo = namedtuple("TensorInfo", "name ne type offset nbytes")


class GGUFError(Exception):
    pass


class GGUFReader:
    def __init__(self, path):
        self.path = path
        self.buf = np.memmap(path, dtype=np.uint8, mode="r")
        self.pos = 0
        self.metadata = OrderedDict()
        self.metadata_types = OrderedDict()
        self.tensors = OrderedDict()
        self._parse()

    # -- primitive reads ----------------------------------------------------------
    def _read(self, n):
        if self.pos + n > len(self.buf):
            raise GGUFError("%s: truncated file (need %d bytes at offset %d)" % (self.path, n, self.pos))
        b = self.buf[self.pos:self.pos + n].tobytes()
        self.pos += n
        return b

    def _unpack(self, fmt):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self._read(size))

    def _string(self):
        (n,) = self._unpack(self._lenfmt)
        return self._read(n).decode("utf-8", errors="surrogateescape")

    def _value(self, vtype):
        if vtype == gw.GGUF_TYPE_STRING:
            return self._string()
        if vtype in gw.SCALAR_FORMATS:
            v = self._unpack(gw.SCALAR_FORMATS[vtype])[0]
            return v
        if vtype == gw.GGUF_TYPE_ARRAY:
            (et,) = self._unpack("<I")
            (n,) = self._unpack(self._lenfmt)
            if et in gw.SCALAR_DTYPES:
                dt = gw.SCALAR_DTYPES[et]
                arr = np.frombuffer(self._read(n * dt.itemsize), dtype=dt)
                if et == gw.GGUF_TYPE_BOOL:
                    arr = arr.astype(bool)
                return arr
            if et == gw.GGUF_TYPE_STRING:
                return [self._string() for _ in range(n)]
            if et == gw.GGUF_TYPE_ARRAY:
                return [self._value(gw.GGUF_TYPE_ARRAY) for _ in range(n)]
            raise GGUFError("bad array element type %d" % et)
        raise GGUFError("bad metadata value type %d at offset %d" % (vtype, self.pos))

    def _parse(self):
        magic = self._read(4)
        if magic != gw.GGUF_MAGIC:
            raise GGUFError("%s: not a GGUF file (magic %r)" % (self.path, magic))
        (self.version,) = self._unpack("<I")
        if self.version not in (2, 3):
            raise GGUFError("%s: unsupported GGUF version %d" % (self.path, self.version))
        self._lenfmt = "<Q"
        n_tensors, n_kv = self._unpack("<QQ")
        for _ in range(n_kv):
            key = self._string()
            (vtype,) = self._unpack("<I")
            if vtype == gw.GGUF_TYPE_ARRAY:
                et = struct.unpack("<I", self.buf[self.pos:self.pos + 4].tobytes())[0]
                self.metadata_types[key] = (vtype, et)
            else:
                self.metadata_types[key] = vtype
            self.metadata[key] = self._value(vtype)
        self.alignment = int(self.metadata.get("general.alignment", gw.DEFAULT_ALIGNMENT))
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            (nd,) = self._unpack("<I")
            ne = list(self._unpack("<%dQ" % nd))
            ttype, off = self._unpack("<IQ")
            infos.append((name, ne, ttype, off))
        self.data_offset = self.pos + ((-self.pos) % self.alignment)
        for name, ne, ttype, off in infos:
            if ttype not in gw.GGML_TYPES:
                raise GGUFError("tensor %s: unknown ggml type %d" % (name, ttype))
            nb = gw.tensor_nbytes(ne, ttype)
            if self.data_offset + off + nb > len(self.buf):
                raise GGUFError("tensor %s: data beyond end of file" % name)
            self.tensors[name] = TensorInfo(name, ne, ttype, off, nb)

    # -- tensor access --------------------------------------------------------------
    def raw(self, name):
        t = self.tensors[name]
        start = self.data_offset + t.offset
        return self.buf[start:start + t.nbytes]

    def shape(self, name):
        """numpy-order shape (outermost first)."""
        return tuple(reversed(self.tensors[name].ne))

    def tensor(self, name, dequantize=True):
        t = self.tensors[name]
        raw = self.raw(name)
        if not dequantize:
            return np.array(raw)
        return gw.dequantize(raw.tobytes(), t.type, self.shape(name))


def main(argv):
    if len(argv) < 2:
        print("usage: gguf_reader.py FILE.gguf [--tensors]")
        return 2
    r = GGUFReader(argv[1])
    print("GGUF v%d, %d kv, %d tensors" % (r.version, len(r.metadata), len(r.tensors)))
    for k, v in r.metadata.items():
        if isinstance(v, (list, np.ndarray)) and len(v) > 8:
            v = "[%s, ... (%d items)]" % (", ".join(repr(x) for x in list(v[:5])), len(v))
        print("  %-45s %r" % (k, v))
    if "--tensors" in argv:
        for t in r.tensors.values():
            print("  %-30s %-6s ne=%s" % (t.name, gw.type_name(t.type), t.ne))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
