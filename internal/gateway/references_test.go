package gateway

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

const referencesPolicy = `
issuers:
  ci:
    url: https://ci.example.com
    audience: https://mayfly.test
upstreams:
  reg:
    url: {{UP}}/base
    credential: {secret: api-token}
  reg2:
    url: {{UP}}/v2
    credential: {secret: api-token}
  s3:
    url: {{UP}}
    credential: {secret: api-token}
  s3b:
    url: {{UP}}/bucket
    credential: {secret: api-token}
  gcs:
    url: {{UP}}
    credential: {secret: api-token}
  gcsb:
    url: {{UP}}/storage/v1/b/mybucket
    credential: {secret: api-token}
grants:
  push:
    upstream: reg
    ttl: 10m
    allow:
      - methods: [GET, HEAD]
        paths: ["/v2/org/app/**", "/v2/org/shared/**"]
      - methods: [POST, PUT, PATCH]
        paths: ["/v2/org/app/blobs/uploads/**"]
      - methods: [POST, PUT]
        paths: ["/v2/org/writeonly/**"]
    who: [{issuer: ci, claims: {repository: acme/app}}]
  push2:
    upstream: reg2
    ttl: 10m
    allow:
      - methods: [GET]
        paths: ["/org/app/**", "/org/shared/**"]
      - methods: [POST]
        paths: ["/org/app/blobs/uploads/**"]
    who: [{issuer: ci, claims: {repository: acme/app}}]
  store:
    upstream: s3
    ttl: 10m
    allow:
      - methods: [GET]
        paths: ["/bucket/in/**", "/bucket/tmp/**"]
      - methods: [PUT]
        paths: ["/bucket/out/**"]
      - methods: [DELETE]
        paths: ["/bucket/tmp/**"]
    who: [{issuer: ci, claims: {repository: acme/app}}]
  store2:
    upstream: s3b
    ttl: 10m
    allow:
      - methods: [GET]
        paths: ["/in/**"]
      - methods: [PUT]
        paths: ["/out/**"]
    who: [{issuer: ci, claims: {repository: acme/app}}]
  gcs:
    upstream: gcs
    ttl: 10m
    allow:
      - methods: [GET]
        paths: ["/storage/v1/b/mybucket/o/pub"]
      - methods: [POST]
        paths: ["/storage/v1/b/mybucket/**", "/storage/v1/b/other/o/drop"]
      - methods: [PUT]
        paths: ["/storage/v1/b/mybucket/**"]
    who: [{issuer: ci, claims: {repository: acme/app}}]
  gcsb:
    upstream: gcsb
    ttl: 10m
    allow:
      - methods: [GET]
        paths: ["/o/pub"]
      - methods: [POST]
        paths: ["/**"]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`

// A request that names a second resource of the upstream outside its path
// (a registry's cross-repository blob mount, a storage API's copy or
// rename source) reads it with the injected credential: the grant that
// allows the request must allow reading that path too (a rename also
// removing it), else the request is refused and never forwarded.
func TestReferencesOutsideThePath(t *testing.T) {
	h := newHarness(t)
	p, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(strings.ReplaceAll(referencesPolicy, "{{UP}}", h.up.srv.URL))}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.pol.p.Store(p)
	tok := h.issue(lease.Request{Grants: []string{"push", "push2", "store", "store2", "gcs", "gcsb"}})
	up := h.up.srv.URL
	tests := []struct {
		name, method, target string
		hdr                  map[string]string
		want                 int
	}{
		{"upload, no mount", "POST", "/gw/reg/v2/org/app/blobs/uploads/", nil, 200},
		{"mount from a readable repository", "POST", "/gw/reg/v2/org/app/blobs/uploads/?mount=sha256:aa&from=org/shared", nil, 200},
		{"mount from another repository", "POST", "/gw/reg/v2/org/app/blobs/uploads/?mount=sha256:aa&from=org/private", nil, 403},
		{"mount from a write-only repository", "POST", "/gw/reg/v2/org/app/blobs/uploads/?mount=sha256:aa&from=org/writeonly", nil, 403},
		{"mount, from encoded", "POST", "/gw/reg/v2/org/app/blobs/uploads/?mount=sha256:aa&from=org%2Fprivate", nil, 403},
		{"mount, from twice", "POST", "/gw/reg/v2/org/app/blobs/uploads/?mount=sha256:aa&from=org/shared&from=org/private", nil, 403},
		{"mount, from after ;", "POST", "/gw/reg/v2/org/app/blobs/uploads/?mount=sha256:aa;from=org/private", nil, 403},
		{"mount, FROM", "POST", "/gw/reg/v2/org/app/blobs/uploads/?mount=sha256:aa&FROM=org/private", nil, 403},
		{"mount without from (any repository)", "POST", "/gw/reg/v2/org/app/blobs/uploads/?mount=sha256:aa", nil, 403},
		{"mount, from with ..", "POST", "/gw/reg/v2/org/app/blobs/uploads/?mount=sha256:aa&from=org/shared/../private", nil, 400},
		{"mount, digest with ..", "POST", "/gw/reg/v2/org/app/blobs/uploads/?mount=../../private/blobs/x&from=org/shared", nil, 400},
		{"mount on an upstream at /v2", "POST", "/gw/reg2/org/app/blobs/uploads/?mount=sha256:aa&from=org/shared", nil, 200},
		{"mount on an upstream at /v2, other repository", "POST", "/gw/reg2/org/app/blobs/uploads/?mount=sha256:aa&from=org/private", nil, 403},

		{"copy from a readable key", "PUT", "/gw/s3/bucket/out/x", map[string]string{"x-amz-copy-source": "/bucket/in/a"}, 200},
		{"copy, no leading slash", "PUT", "/gw/s3/bucket/out/x", map[string]string{"x-amz-copy-source": "bucket/in/a%20b"}, 200},
		{"copy with a version", "PUT", "/gw/s3/bucket/out/x", map[string]string{"x-amz-copy-source": "/bucket/in/a?versionId=3"}, 200},
		{"copy from another key", "PUT", "/gw/s3/bucket/out/x", map[string]string{"x-amz-copy-source": "/bucket/secret/a"}, 403},
		{"copy from another bucket", "PUT", "/gw/s3/bucket/out/x", map[string]string{"x-amz-copy-source": "/other/in/a"}, 403},
		{"copy from a write-only key", "PUT", "/gw/s3/bucket/out/x", map[string]string{"x-amz-copy-source": "/bucket/out/y"}, 403},
		{"copy, ..", "PUT", "/gw/s3/bucket/out/x", map[string]string{"x-amz-copy-source": "/bucket/in/../secret/a"}, 400},
		{"copy, encoded slash", "PUT", "/gw/s3/bucket/out/x", map[string]string{"x-amz-copy-source": "/bucket/in/..%2Fsecret"}, 400},
		{"copy, spelled with _", "PUT", "/gw/s3/bucket/out/x", map[string]string{"X_Amz_Copy_Source": "/bucket/secret/a"}, 403},
		{"copy, twice", "PUT", "/gw/s3/bucket/out/x", map[string]string{"x-amz-copy-source": "/bucket/in/a", "X-AMZ-COPY-SOURCE": "/bucket/secret/a"}, 403},
		{"GCS copy from another key", "PUT", "/gw/s3/bucket/out/x", map[string]string{"x-goog-copy-source": "/bucket/secret/a"}, 403},
		{"GCS copy from a readable key", "PUT", "/gw/s3/bucket/out/x", map[string]string{"x-goog-copy-source": "bucket/in/a"}, 200},
		{"rename from a removable key", "PUT", "/gw/s3/bucket/out/x", map[string]string{"x-amz-rename-source": "/bucket/tmp/a"}, 200},
		{"rename from a read-only key", "PUT", "/gw/s3/bucket/out/x", map[string]string{"x-amz-rename-source": "/bucket/in/a"}, 403},
		{"Azure copy from a readable blob", "PUT", "/gw/s3/bucket/out/x", map[string]string{"x-ms-copy-source": up + "/bucket/in/a"}, 200},
		{"Azure copy from another blob", "PUT", "/gw/s3/bucket/out/x", map[string]string{"x-ms-copy-source": up + "/bucket/secret/a"}, 403},
		{"Azure copy from another host", "PUT", "/gw/s3/bucket/out/x", map[string]string{"x-ms-copy-source": "https://other.example/bucket/in/a"}, 403},
		{"upstream under its bucket: readable", "PUT", "/gw/s3b/out/x", map[string]string{"x-amz-copy-source": "/bucket/in/a"}, 200},
		{"upstream under its bucket: another bucket", "PUT", "/gw/s3b/out/x", map[string]string{"x-amz-copy-source": "/other/in/a"}, 403},
		{"upstream under its bucket: another key", "PUT", "/gw/s3b/out/x", map[string]string{"x-amz-copy-source": "/bucket/secret"}, 403},
		{"S3 UploadPartCopy from a readable key", "PUT", "/gw/s3/bucket/out/x?partNumber=1&uploadId=u1", map[string]string{"x-amz-copy-source": "/bucket/in/a"}, 200},
		{"S3 UploadPartCopy from another key", "PUT", "/gw/s3/bucket/out/x?partNumber=1&uploadId=u1", map[string]string{"x-amz-copy-source": "/bucket/secret/a"}, 403},

		// Cloud Storage's JSON API names both objects in the path: a
		// grant's "**" after the source bucket covers any destination.
		{"GCS copyTo within the bucket", "POST", "/gw/gcs/storage/v1/b/mybucket/o/pub/copyTo/b/mybucket/o/x", nil, 200},
		{"GCS copyTo into another bucket", "POST", "/gw/gcs/storage/v1/b/mybucket/o/pub/copyTo/b/other/o/x", nil, 403},
		{"GCS copyTo into a writable object of another bucket", "POST", "/gw/gcs/storage/v1/b/mybucket/o/pub/copyTo/b/other/o/drop", nil, 200},
		{"GCS copyTo from an unreadable object", "POST", "/gw/gcs/storage/v1/b/mybucket/o/secret/copyTo/b/mybucket/o/x", nil, 403},
		{"GCS rewriteTo into another bucket", "POST", "/gw/gcs/storage/v1/b/mybucket/o/pub/rewriteTo/b/other/o/x?rewriteToken=t", nil, 403},
		{"GCS rewriteTo within the bucket", "POST", "/gw/gcs/storage/v1/b/mybucket/o/pub/rewriteTo/b/mybucket/o/x", nil, 200},
		{"GCS copyTo, other case", "POST", "/gw/gcs/storage/v1/b/mybucket/o/pub/COPYTO/B/other/O/x", nil, 403},
		{"GCS copyTo, method override", "POST", "/gw/gcs/storage/v1/b/mybucket/o/pub/copyTo/b/other/o/drop", map[string]string{"X-HTTP-Method-Override": "PUT"}, 403},
		{"GCS copyTo inside an object name", "POST", "/gw/gcs/storage/v1/b/mybucket/o/pub/copyTo/b/mybucket/o/x/copyTo/b/other/o/y", nil, 403},
		{"GCS copyTo without a source object", "POST", "/gw/gcs/storage/v1/b/mybucket/copyTo/b/other/o/x", nil, 400},
		{"GCS upstream under its bucket: copyTo within", "POST", "/gw/gcsb/o/pub/copyTo/b/mybucket/o/x", nil, 200},
		{"GCS upstream under its bucket: copyTo into another", "POST", "/gw/gcsb/o/pub/copyTo/b/other/o/x", nil, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := bearer(tok)
			for k, v := range tt.hdr {
				hdr[k] = v
			}
			before, entries := h.up.count(), len(h.entries())
			resp, body := h.raw(tt.method, tt.target, hdr)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, body)
			}
			if tt.want != 200 {
				if h.up.count() != before {
					t.Fatal("the upstream was reached")
				}
				// Among the entries since (an earlier request's outcome may
				// come after this refusal's).
				recorded := false
				for _, e := range h.entries()[entries:] {
					recorded = recorded || e.Type == TypeRequest && e.Status == tt.want && e.Reason != ""
				}
				if !recorded {
					t.Fatalf("no entry records the refusal: %+v", h.entries()[entries:])
				}
			}
		})
	}
	// The refusal says which reference, in the answer and the entry.
	hdr := bearer(tok)
	hdr["x-amz-copy-source"] = "/bucket/secret/a"
	_, body := h.raw("PUT", "/gw/s3/bucket/out/x", hdr)
	if !strings.Contains(body, "(reading x-amz-copy-source /bucket/secret/a)") {
		t.Fatalf("refusal %s", body)
	}
	e := h.entries()
	recorded := false
	for _, en := range e {
		recorded = recorded || strings.Contains(en.Reason, "(reading x-amz-copy-source /bucket/secret/a)")
	}
	if !recorded {
		t.Fatal("no entry names the reference")
	}
	_, body = h.raw("POST", "/gw/gcs/storage/v1/b/mybucket/o/pub/copyTo/b/other/o/x", bearer(tok))
	if !strings.Contains(body, "(POST on copyTo destination /storage/v1/b/other/o/x)") {
		t.Fatalf("refusal %s", body)
	}
	// An allowed request's entry names what it read.
	hdr["x-amz-copy-source"] = "/bucket/in/a"
	if resp, body := h.raw("PUT", "/gw/s3/bucket/out/x", hdr); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for found := false; !found; {
		for _, en := range h.entries()[len(e):] {
			found = found || en.Detail["references"] == "x-amz-copy-source /bucket/in/a"
		}
		if !found && time.Now().After(deadline) {
			t.Fatalf("no entry names what the request read: %+v", h.entries()[len(e):])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Every allowed request is looked at for references: one that names none
// costs no allocation, whatever its headers.
func TestReferencesNoneAllocatesNothing(t *testing.T) {
	r := httptest.NewRequest("POST", "/gw/reg/v2/org/app/blobs/uploads/?digest=sha256:aa", nil)
	r.Header.Set("Authorization", "Bearer x")
	r.Header.Set("Sec-Websocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
	r.Header.Set("X-Amz-Copy-Source-Range", "bytes=0-9")
	if n := testing.AllocsPerRun(100, func() {
		if refs, de := references(r, "/v2/org/app/blobs/uploads/", "https://registry.example"); refs != nil || de != nil {
			t.Fatal(refs, de)
		}
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}
