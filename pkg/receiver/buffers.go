package receiver

import (
	"bytes"
	"sync"
)

// maxPooledBuffer is the largest request body buffer kept for reuse; a
// rare bigger one is left to the garbage collector rather than pinned.
const maxPooledBuffer = 1 << 20

// buffers recycles request body buffers: a 100-alert webhook is ~90 KB,
// and reading it into a fresh, doubling slice made a few hundred KB of
// garbage per request. The decoder copies every string it keeps out of
// the body, so a buffer is free once the request is answered.
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// getBuffer returns an empty buffer with room for a body of the declared
// length (unknown: -1) and the EOF read after it.
func getBuffer(declared int64) *bytes.Buffer {
	b := buffers.Get().(*bytes.Buffer)
	if declared > 0 && declared < maxPooledBuffer {
		b.Grow(int(declared) + bytes.MinRead)
	}
	return b
}

func putBuffer(b *bytes.Buffer) {
	if b.Cap() > maxPooledBuffer {
		return
	}
	b.Reset()
	buffers.Put(b)
}
