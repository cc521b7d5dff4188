package alert

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Headers of a signed delivery. The signature covers
// timestamp + "." + body, so a receiver that checks the timestamp's age
// refuses a replay of an old delivery.
const (
	HeaderSignature = "X-Mayfly-Signature" // "sha256=" + hex HMAC-SHA256
	HeaderTimestamp = "X-Mayfly-Timestamp" // Unix seconds
	HeaderAlertID   = "X-Mayfly-Alert-Id"
)

// Sign returns the X-Mayfly-Signature value for body sent at ts.
func Sign(key []byte, ts int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a delivery as a receiver would: the signature over the
// exact body and timestamp, compared in constant time, and the timestamp
// within tolerance of now.
func Verify(key []byte, timestamp, signature string, body []byte, now time.Time, tolerance time.Duration) error {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return errors.New("alert: timestamp is not Unix seconds")
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return errors.New("alert: timestamp outside the tolerance (a replay?)")
	}
	if !strings.HasPrefix(signature, "sha256=") {
		return errors.New("alert: signature is not sha256=")
	}
	if !hmac.Equal([]byte(Sign(key, ts, body)), []byte(signature)) {
		return errors.New("alert: signature does not match")
	}
	return nil
}
