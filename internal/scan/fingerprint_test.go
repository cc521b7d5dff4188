package scan

import "testing"

func TestFingerprintPathSpelling(t *testing.T) {
	for _, alt := range []string{"./a.txt", "a.txt", "x/../a.txt"} {
		if Fingerprint("r", alt, "s3cr3t-value") != Fingerprint("r", "a.txt", "s3cr3t-value") {
			t.Errorf("%q fingerprints differently from a.txt", alt)
		}
	}
	if Fingerprint("r", "b.txt", "s3cr3t-value") == Fingerprint("r", "a.txt", "s3cr3t-value") {
		t.Error("different files share a fingerprint")
	}
}
