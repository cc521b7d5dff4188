package gateway

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
)

// wsMasker is the upstream end of an upgraded WebSocket connection (RFC
// 6455) as the reverse proxy copies it to the client. Reads parse the
// upstream's frames and mask the credential and token forms in every
// payload, keeping each frame's length: a masked byte becomes '*', so
// headers pass through unchanged. Writes (client to upstream) pass through.
//
// A match split between chunks of one frame is held back until the rest
// arrives. A match split between the frames of one message is masked in
// the later frame, and in the earlier one when the part it ends with is at
// least wsMinTail bytes long: so at most wsMinTail-1 bytes of a secret can
// show, at the end of a frame. Frames the gateway cannot inspect (RSV bits
// set, which means a compression extension; masked server frames; invalid
// control frames) end the connection: the request strips
// Sec-WebSocket-Extensions so that a conforming upstream sends none.
//
// Memory is bounded by the read buffer plus twice the longest pattern.
type wsMasker struct {
	conn io.ReadWriteCloser
	red  *redactor

	buf []byte // read from the upstream, not yet parsed
	out []byte // processed, not yet returned
	err error  // the upstream's read error, returned once out is drained

	inFrame   bool
	control   bool
	remaining uint64 // payload bytes of the current frame still to parse
	first     bool   // the next payload bytes start the current frame
	held      []byte // payload bytes held back: they may start a match
	starHead  int    // leading bytes of the next run that end a match already cut
	carry     []byte // the end of the last data frame's payload, unmasked
}

// wsMinTail is how long the end of a frame that begins a pattern must be
// to be masked before the next frame shows whether the pattern continues.
const wsMinTail = 4

var errWSFrame = errors.New("gateway: upstream WebSocket frame the gateway cannot inspect")

func newWSMasker(conn io.ReadWriteCloser, red *redactor) *wsMasker {
	return &wsMasker{conn: conn, red: red}
}

func (m *wsMasker) Write(p []byte) (int, error) { return m.conn.Write(p) }
func (m *wsMasker) Close() error                { return m.conn.Close() }

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
			m.inFrame, m.remaining, m.first = true, length, true
			m.control = opcode >= 8
			if opcode == 1 || opcode == 2 {
				m.carry = m.carry[:0] // a new message: nothing continues into it
			}
			if length == 0 {
				m.inFrame = false
			}
			continue
		}
		if len(m.buf) == 0 {
			if m.err != nil && len(m.held) > 0 {
				// The upstream is gone mid-frame: release what was held
				// back, masked as an end.
				m.out = append(m.out, m.maskRun(m.held, true, nil)...)
				m.held = nil
			}
			return nil
		}
		n := int(min(m.remaining, uint64(len(m.buf))))
		m.remaining -= uint64(n)
		payload := append(m.held, m.buf[:n]...)
		m.buf = m.buf[:copy(m.buf, m.buf[n:])]
		m.held = nil
		if m.remaining == 0 {
			m.out = append(m.out, m.maskRun(payload, true, nil)...)
			m.inFrame = false
			continue
		}
		// More of this frame is to come: hold back a tail that could start
		// a match, and pull the cut back over any match that crosses it,
		// never holding more than twice the longest pattern (a match then
		// cut is masked on both sides: starHead).
		cut := len(payload) - m.red.partialTail(payload)
		ivs := m.red.find(payload)
		for moved := true; moved; {
			moved = false
			for _, r := range ivs {
				if r.s < cut && r.e > cut {
					cut, moved = r.s, true
				}
			}
		}
		if floor := len(payload) - 2*m.red.maxLen; cut < floor {
			cut = floor
			for _, r := range ivs {
				if r.s < cut && r.e > cut {
					m.starHead = max(m.starHead, r.e-cut)
				}
			}
		}
		m.held = append(make([]byte, 0, len(payload)-cut), payload[cut:]...)
		var before []iv // the matches found, clipped to what is released now
		for _, r := range ivs {
			if r.s < cut {
				before = append(before, iv{r.s, min(r.e, cut)})
			}
		}
		m.out = append(m.out, m.maskRun(payload[:cut], false, before)...)
	}
}

// maskRun masks a run of the current frame's payload in place and returns
// it. found holds the run's matches when the caller has them (nil: look).
// end: the run ends the frame, so a tail that begins a pattern is masked
// when at least wsMinTail long, and a data frame's end is kept to check the
// next frame against.
func (m *wsMasker) maskRun(run []byte, end bool, found []iv) []byte {
	var starred []iv
	if m.starHead > 0 {
		starred = append(starred, iv{0, min(m.starHead, len(run))})
		m.starHead -= min(m.starHead, len(run))
	}
	if m.first {
		m.first = false
		if !m.control && len(m.carry) > 0 {
			if l := continuation(m.red, m.carry, run); l > 0 {
				starred = append(starred, iv{0, l})
			}
		}
	}
	if found == nil {
		found = m.red.find(run)
	}
	starred = append(starred, found...)
	var orig []byte
	if end {
		if t := m.red.partialTail(run); t >= wsMinTail {
			starred = append(starred, iv{len(run) - t, len(run)})
		}
		if !m.control {
			keep := min(len(run), m.red.maxLen)
			orig = bytes.Clone(run[len(run)-keep:])
		}
	}
	for _, r := range starred {
		for i := r.s; i < r.e; i++ {
			run[i] = '*'
		}
	}
	if end && !m.control {
		// Keep the unmasked end of the message so far (short frames add up).
		m.carry = append(m.carry, orig...)
		if over := len(m.carry) - m.red.maxLen; over > 0 {
			m.carry = m.carry[:copy(m.carry, m.carry[over:])]
		}
	}
	return run
}

// continuation returns how many leading bytes of next continue a pattern
// that prev ends with the beginning of: the rest of the pattern, or all of
// next when next lies wholly inside that rest (a pattern cut into three
// frames or more).
func continuation(r *redactor, prev, next []byte) int {
	best := 0
	for _, p := range r.pats {
		for l := 1; l < len(p) && l <= len(prev); l++ {
			if !bytes.HasSuffix(prev, p[:l]) {
				continue
			}
			rest := p[l:]
			switch {
			case len(rest) <= len(next) && bytes.HasPrefix(next, rest):
				best = max(best, len(rest))
			case len(next) < len(rest) && bytes.HasPrefix(rest, next):
				best = max(best, len(next))
			}
		}
	}
	return best
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
