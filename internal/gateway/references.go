package gateway

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/policy"
)

// A request may name, beside its path, another resource of the upstream
// that the upstream then reads (or removes) with the credential the
// gateway injected: a grant scoped to one repository or key prefix would
// reach every other. The gateway knows these, all read as a path of the
// same upstream (relative to its url, cleaned as a request path is), and
// the grant that allows the request must allow reading each (GET; a
// rename, whose source goes, DELETE too); else 403, and one it cannot read
// as such a path 400, never forwarded:
//
//   - x-amz-copy-source (S3 CopyObject and UploadPartCopy, and the stores
//     that speak S3) and x-goog-copy-source (Cloud Storage's XML API):
//     "[/]bucket/key[?versionId=…]", a percent-encoded path from the
//     host's root, as a path-style upstream (https://s3.REGION.amazonaws.com,
//     or …/bucket) has its paths;
//   - x-amz-rename-source (S3 RenameObject) and x-ms-rename-source (Azure
//     Data Lake's rename): the same, read and removed;
//   - x-ms-copy-source (Azure Blob's Copy Blob and the *From URL
//     operations): a URL, which must be on the upstream's host (another
//     host of the same account could be read with its key too);
//   - the Docker Registry / OCI cross-repository blob mount, POST
//     …/v2/<name>/blobs/uploads/?mount=<digest>&from=<repository>, which
//     reads …/v2/<repository>/blobs/<digest> (the first v2 segment of the
//     upstream's URL path being the API root); a mount without from
//     (OCI's automatic content discovery: any repository) is refused.
//
// Header names are matched in any case and with "_" for "-"; query names
// in any case, split on ";" too: more than an upstream reads, never less.
//   - Cloud Storage's JSON API copy and rewrite, whose path names two
//     objects, …/b/<bucket>/o/<object>/copyTo/b/<bucket2>/o/<object2>
//     (rewriteTo alike): a grant's "**" after the source bucket would
//     cover a destination in any bucket. The source, …/b/<bucket>/o/
//     <object>, must be readable (GET), and the destination, the same API
//     root then b/<bucket2>/o/<object2>, allowed for the request's own
//     methods, as a WebDAV Destination is. Every copyTo or rewriteTo
//     segment followed by b/…/o/… is read so, case folded: an object name
//     holding one (unencoded "/") is checked both ways, more than the
//     upstream reads, never less; one with no …/b/…/o/… before it is 400.
//
// Header names are matched in any case and with "_" for "-"; query names
// in any case, split on ";" too: more than an upstream reads, never less.
// WebDAV's Destination is destination.go's (the request's own methods
// apply there). References inside bodies (GraphQL, batch APIs, S3 Batch
// Operations' manifests, Cloud Storage's compose sources) are not read.

// reference is a resource a request names outside its path.
type reference struct {
	by     string // what names it: the folded header name, or "mount"
	path   string // clean, relative to the upstream's url
	remove bool   // the upstream removes it too (a rename)
	write  bool   // the upstream writes it with the request's own methods (a copy's destination), not read
}

// maxReferences bounds the references of one request (each is decided):
// a real one names one.
const maxReferences = 16

// references returns the resources the request names beyond its path
// (clean, on the upstream whose url is upURL), or why it is refused.
func references(r *http.Request, clean, upURL string) ([]reference, *destinationError) {
	var refs []reference
	var base *url.URL // parsed only when a reference needs it
	baseOf := func() (*url.URL, *destinationError) {
		if base == nil {
			u, err := url.Parse(upURL)
			if err != nil {
				return nil, &destinationError{http.StatusBadGateway, "the upstream's url cannot be read"}
			}
			base = u
		}
		return base, nil
	}
	var buf [32]byte
	for k, vs := range r.Header {
		if len(k) < len("x-ms-copy-source") || len(k) > len("x-amz-rename-source") {
			continue // every request's headers: no fold for most
		}
		// n is a constant: the folded name must not escape (it would be
		// allocated for every header of this length).
		var n string
		var remove, isURL bool
		switch string(appendHeaderKey(buf[:0], k)) {
		case "x-amz-copy-source":
			n = "x-amz-copy-source"
		case "x-goog-copy-source":
			n = "x-goog-copy-source"
		case "x-amz-rename-source":
			n, remove = "x-amz-rename-source", true
		case "x-ms-rename-source":
			n, remove = "x-ms-rename-source", true
		case "x-ms-copy-source":
			n, isURL = "x-ms-copy-source", true
		default:
			continue
		}
		b, de := baseOf()
		if de != nil {
			return nil, de
		}
		for _, v := range vs {
			p, de := sourcePath(n, strings.TrimSpace(v), isURL, b)
			if de != nil {
				return nil, de
			}
			refs = append(refs, reference{by: n, path: p, remove: remove})
		}
	}
	if r.URL.RawQuery != "" && (strings.HasSuffix(clean, "/blobs/uploads") || strings.HasSuffix(clean, "/blobs/uploads/")) {
		mounts, de := blobMounts(r.URL.RawQuery, clean, baseOf)
		if de != nil {
			return nil, de
		}
		refs = append(refs, mounts...)
	}
	if hasCopySegment(clean) {
		b, de := baseOf()
		if de != nil {
			return nil, de
		}
		copies, de := copyPaths(clean, b)
		if de != nil {
			return nil, de
		}
		refs = append(refs, copies...)
	}
	if len(refs) > maxReferences {
		return nil, &destinationError{http.StatusBadRequest, "the request names more than 16 other resources (copy sources, blob mounts)"}
	}
	if len(refs) > 1 {
		// Header order is the map's: the entry and the refusal read the same every time.
		slices.SortFunc(refs, func(a, b reference) int { return strings.Compare(a.by+" "+a.path, b.by+" "+b.path) })
	}
	return refs, nil
}

// sourcePath reads a copy or rename source: a percent-encoded path from
// the host's root ("bucket/key" or "/bucket/key", a query after it), or,
// isURL, a URL on the upstream's host.
func sourcePath(name, v string, isURL bool, base *url.URL) (string, *destinationError) {
	var full string
	if isURL {
		u, err := url.Parse(v)
		if err != nil || u.Opaque != "" || u.User != nil || u.Scheme != "http" && u.Scheme != "https" {
			return "", &destinationError{http.StatusBadRequest, name + ": not an http(s) URL"}
		}
		if !strings.EqualFold(strings.TrimSuffix(u.Host, "."), base.Host) {
			return "", &destinationError{http.StatusForbidden, name + ": names another host than the upstream's"}
		}
		full = u.EscapedPath()
	} else {
		full, _, _ = strings.Cut(v, "?")
		if !strings.HasPrefix(full, "/") {
			full = "/" + full
		}
	}
	rel, ok := underBase(full, strings.TrimRight(base.EscapedPath(), "/"))
	if !ok {
		return "", &destinationError{http.StatusForbidden, name + ": names a resource outside the upstream's url"}
	}
	clean, err := policy.CleanPath(rel)
	if err != nil {
		return "", &destinationError{http.StatusBadRequest, name + ": " + err.Error()}
	}
	return clean, nil
}

// underBase returns full relative to the upstream url's path base (no
// trailing "/"), when it is under it.
func underBase(full, base string) (string, bool) {
	if base == "" {
		return full, true
	}
	rest, ok := strings.CutPrefix(full, base)
	switch {
	case !ok:
		return "", false
	case rest == "":
		return "/", true
	case rest[0] != '/':
		return "", false // base ended inside a segment
	}
	return rest, true
}

// blobMounts reads a registry blob upload's mount and from parameters:
// each mount of each repository from names is read there. clean is the
// upload's path on the upstream whose url baseOf parses.
func blobMounts(query, clean string, baseOf func() (*url.URL, *destinationError)) ([]reference, *destinationError) {
	var mounts, froms []string
	for pair := range strings.FieldsFuncSeq(query, func(r rune) bool { return r == '&' || r == ';' }) {
		k, v, _ := strings.Cut(pair, "=")
		k, err := url.QueryUnescape(k)
		if err != nil {
			return nil, &destinationError{http.StatusBadRequest, "blob mount: the query cannot be read"}
		}
		switch strings.ToLower(k) {
		case "mount", "from":
		default:
			continue
		}
		v, err = url.QueryUnescape(v)
		if err != nil {
			return nil, &destinationError{http.StatusBadRequest, "blob mount: the query cannot be read"}
		}
		if strings.EqualFold(k, "mount") {
			mounts = append(mounts, v)
		} else {
			froms = append(froms, v)
		}
	}
	if len(mounts) == 0 {
		return nil, nil // from alone mounts nothing
	}
	if len(froms) == 0 {
		return nil, &destinationError{http.StatusForbidden, "blob mount: a mount without from may take the blob from any repository: name the repository (from)"}
	}
	if len(mounts)*len(froms) > maxReferences {
		return nil, &destinationError{http.StatusBadRequest, "the request names more than 16 other resources (copy sources, blob mounts)"}
	}
	base, de := baseOf()
	if de != nil {
		return nil, de
	}
	full := strings.TrimRight(base.Path, "/") + clean
	i := strings.Index(full+"/", "/v2/")
	if i < 0 {
		return nil, &destinationError{http.StatusForbidden, "blob mount: the upload is not under a /v2/ API root"}
	}
	root := full[:i+len("/v2")]
	var refs []reference
	for _, f := range froms {
		for _, m := range mounts {
			rel, ok := underBase(root+"/"+f+"/blobs/"+m, strings.TrimRight(base.Path, "/"))
			if !ok {
				return nil, &destinationError{http.StatusForbidden, "blob mount: names a repository outside the upstream's url"}
			}
			clean, err := policy.CleanPath(policy.EscapePath(rel))
			if err != nil {
				return nil, &destinationError{http.StatusBadRequest, "blob mount: " + err.Error()}
			}
			refs = append(refs, reference{by: "mount", path: clean})
		}
	}
	return refs, nil
}

// hasCopySegment says whether clean has a copyTo or rewriteTo segment
// (any case) with something after it: a Cloud Storage JSON API copy may
// name a second object. It does not allocate.
func hasCopySegment(clean string) bool {
	for i := 0; i < len(clean); i++ {
		if clean[i] != '/' {
			continue
		}
		rest := clean[i+1:]
		for _, v := range [...]string{"copyto/", "rewriteto/"} {
			if len(rest) > len(v) && strings.EqualFold(rest[:len(v)], v) {
				return true
			}
		}
	}
	return false
}

// copyPaths reads the objects a Cloud Storage JSON API copy or rewrite
// names in its path (clean, on the upstream whose url is base): for each
// copyTo or rewriteTo segment followed by b/<bucket>/o/<object>, the
// source before it (read) and the destination (written).
func copyPaths(clean string, base *url.URL) ([]reference, *destinationError) {
	root := strings.TrimRight(base.Path, "/")
	segs := strings.Split(strings.TrimPrefix(root+clean, "/"), "/")
	var refs []reference
	for i, s := range segs {
		var by string
		switch {
		case strings.EqualFold(s, "copyTo"):
			by = "copyTo"
		case strings.EqualFold(s, "rewriteTo"):
			by = "rewriteTo"
		default:
			continue
		}
		// b/<bucket>/o/<object…> after it: else the upstream copies nothing.
		if len(segs) < i+5 || !strings.EqualFold(segs[i+1], "b") || !strings.EqualFold(segs[i+3], "o") || segs[i+4] == "" {
			continue
		}
		// The source's b/<bucket>/o/<object…>: the first such before it,
		// after the API root.
		j := -1
		for k := 0; k+3 < i; k++ {
			if strings.EqualFold(segs[k], "b") && strings.EqualFold(segs[k+2], "o") {
				j = k
				break
			}
		}
		if j < 0 {
			return nil, &destinationError{http.StatusBadRequest, by + ": the path names no source object (…/b/<bucket>/o/<object>/" + by + "/…)"}
		}
		src := "/" + strings.Join(segs[:i], "/")
		dst := "/" + strings.Join(append(slices.Clone(segs[:j]), segs[i+1:]...), "/")
		for _, ref := range []reference{{by: by + " source", path: src}, {by: by + " destination", path: dst, write: true}} {
			rel, ok := underBase(ref.path, root)
			if !ok {
				return nil, &destinationError{http.StatusForbidden, ref.by + ": names a resource outside the upstream's url"}
			}
			ref.path = rel
			refs = append(refs, ref)
		}
	}
	return refs, nil
}

// accesses is what the grant must allow beside the request line for refs,
// of a request whose methods (its own and its overrides') are methods.
func accesses(refs []reference, methods []string) []policy.Access {
	if len(refs) == 0 {
		return nil
	}
	out := make([]policy.Access, 0, len(refs)+1)
	for _, r := range refs {
		if r.write {
			for _, m := range methods {
				out = append(out, policy.Access{Method: m, Path: r.path})
			}
			continue
		}
		out = append(out, policy.Access{Method: http.MethodGet, Path: r.path})
		if r.remove {
			out = append(out, policy.Access{Method: http.MethodDelete, Path: r.path})
		}
	}
	return out
}

// referencesText is refs for an audit entry's detail: "by path", space
// separated.
func referencesText(refs []reference) string {
	var b strings.Builder
	for i, r := range refs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(r.by + " " + r.path)
	}
	return b.String()
}
