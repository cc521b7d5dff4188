package gateway

import (
	"encoding/binary"
	"errors"
	"io"
	"sync/atomic"

	"github.com/mayfly-sh/mayfly/internal/mask"
)

// wsMasker is the upstream end of an upgraded WebSocket connection (RFC
// 6455) as the reverse proxy copies it to the client. Reads parse the
// upstream's frames and mask the credential and token forms in every
// payload, keeping each frame's length: a masked byte becomes '*'
// (mask.StreamOptions.KeepLength), so headers pass through unchanged.
// Writes (client to upstream) pass through.
//
// The payloads of all data frames form one mask.Stream: a form split
// between frames (or messages) is masked in the later frame, and in the
// earlier one when the part it ends with is at least wsMinTail bytes long
// (the earlier frame must go out whole before the next arrives): so at most
// wsMinTail-1 bytes of a secret can show, at the end of a frame. A control
// frame (at most 125 bytes) is masked whole once it has come. Frames the
// gateway cannot inspect (RSV bits set, which means a compression
// extension; masked server frames; invalid control frames) end the
// connection: the request strips Sec-WebSocket-Extensions so that a
// conforming upstream sends none.
//
// Memory is bounded by the read buffer plus mask.Matcher.MaxHeld.
type wsMasker struct {
	conn io.ReadWriteCloser
	m    *mask.Matcher
	data *mask.Stream // the data frames' payloads

	buf []byte // read from the upstream, not yet parsed
	out []byte // processed, not yet returned
	err error  // the upstream's read error, returned once out is drained

	inFrame   bool
	control   bool
	remaining uint64 // payload bytes of the current frame still to parse
	ctl       []byte // the current control frame's payload so far

	// The bytes that crossed each way, for the request's entry: the proxy
	// copies an upgraded connection itself, past the request body and the
	// writer that count other requests' bytes. Each way has its goroutine.
	sent, recv atomic.Int64
}

// wsMinTail is how long the end of a frame that begins a form must be to
// be masked before the next frame shows whether the form continues.
const wsMinTail = 4

var errWSFrame = errors.New("gateway: upstream WebSocket frame the gateway cannot inspect")

func newWSMasker(conn io.ReadWriteCloser, m *mask.Matcher) *wsMasker {
	return &wsMasker{conn: conn, m: m, data: m.NewStream(mask.StreamOptions{KeepLength: true})}
}

func (m *wsMasker) Write(p []byte) (int, error) {
	n, err := m.conn.Write(p)
	m.sent.Add(int64(n))
	return n, err
}

func (m *wsMasker) Close() error { return m.conn.Close() }

func (m *wsMasker) Read(p []byte) (int, error) {
	for len(m.out) == 0 {
		if err := m.parse(); err != nil {
			m.err, m.buf = err, nil
			m.conn.Close()
		}
		if len(m.out) > 0 {
			break
		}
		if m.err != nil {
			return 0, m.err
		}
		if len(m.buf) == cap(m.buf) {
			m.buf = append(make([]byte, 0, max(2*cap(m.buf), 32<<10)), m.buf...)
		}
		n, err := m.conn.Read(m.buf[len(m.buf):cap(m.buf)])
		m.buf = m.buf[:len(m.buf)+n]
		if err != nil {
			m.err = err
		}
	}
	n := copy(p, m.out)
	m.out = m.out[:copy(m.out, m.out[n:])]
	m.recv.Add(int64(n))
	return n, nil
}

// parse moves what it can from buf to out: frame headers as they are,
// payloads masked.
func (m *wsMasker) parse() error {
	for {
		if !m.inFrame {
			hdr, length, opcode, err := wsHeader(m.buf)
			if err != nil {
				return err
			}
			if hdr == 0 {
				return nil // need more bytes
			}
			m.out = append(m.out, m.buf[:hdr]...)
			m.buf = m.buf[:copy(m.buf, m.buf[hdr:])]
			m.inFrame, m.remaining = length > 0, length
			m.control = opcode >= 8
			continue
		}
		if len(m.buf) == 0 {
			if m.err != nil && !m.control {
				// The upstream is gone mid-frame: release what was held
				// back, masked as an end.
				m.out = m.data.Flush(m.out, wsMinTail)
			}
			return nil
		}
		n := int(min(m.remaining, uint64(len(m.buf))))
		m.remaining -= uint64(n)
		if m.control {
			m.ctl = append(m.ctl, m.buf[:n]...)
			if m.remaining == 0 {
				st := m.m.NewStream(mask.StreamOptions{KeepLength: true})
				m.out = st.Flush(st.Mask(m.out, m.ctl), wsMinTail)
				m.ctl = m.ctl[:0]
			}
		} else {
			m.out = m.data.Mask(m.out, m.buf[:n])
			if m.remaining == 0 {
				m.out = m.data.Flush(m.out, wsMinTail)
			}
		}
		m.buf = m.buf[:copy(m.buf, m.buf[n:])]
		m.inFrame = m.remaining > 0
	}
}

// wsHeader parses a frame header at the start of b. It returns its length
// (0 when b is too short to tell), the payload length and the opcode, or an
// error for a frame the gateway must not pass uninspected.
func wsHeader(b []byte) (int, uint64, byte, error) {
	if len(b) < 2 {
		return 0, 0, 0, nil
	}
	fin, rsv, opcode := b[0]&0x80 != 0, b[0]&0x70, b[0]&0x0f
	masked, l7 := b[1]&0x80 != 0, b[1]&0x7f
	if rsv != 0 || masked {
		return 0, 0, 0, errWSFrame
	}
	if opcode >= 8 && (!fin || l7 > 125) || opcode > 2 && opcode < 8 || opcode > 10 {
		return 0, 0, 0, errWSFrame
	}
	switch l7 {
	case 126:
		if len(b) < 4 {
			return 0, 0, 0, nil
		}
		return 4, uint64(binary.BigEndian.Uint16(b[2:4])), opcode, nil
	case 127:
		if len(b) < 10 {
			return 0, 0, 0, nil
		}
		n := binary.BigEndian.Uint64(b[2:10])
		if n>>63 != 0 {
			return 0, 0, 0, errWSFrame
		}
		return 10, n, opcode, nil
	}
	return 2, uint64(l7), opcode, nil
}
