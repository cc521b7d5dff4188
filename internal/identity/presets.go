package identity

import "slices"

// Preset describes a well-known CI issuer: its URL, the claims it sends, the
// claim that identifies one job (for leases) and the claims that pin a
// repository or project (a who entry without any of them trusts every
// pipeline on the platform).
type Preset struct {
	// Name is a short handle, e.g. "github".
	Name string
	// URL is the issuer's exact iss.
	URL string
	// Claims are the claim names the platform documents for its ID tokens
	// (besides the registered iss, sub, aud, exp, iat, nbf, jti).
	Claims []string
	// JobIDClaim is the claim identifying one job (or run) for leases.
	JobIDClaim string
	// IdentityClaims pin one repository or project.
	IdentityClaims []string
	// Shared is true for multi-tenant issuers, where anyone can obtain a
	// token with this iss.
	Shared bool
}

// Well-known issuer URLs.
const (
	GitHubActionsURL = "https://token.actions.githubusercontent.com"
	GitLabURL        = "https://gitlab.com"
)

// Presets returns the known CI issuers (a fresh copy each call).
func Presets() []Preset {
	return []Preset{
		{
			Name: "github",
			URL:  GitHubActionsURL,
			Claims: []string{
				"repository", "repository_id", "repository_owner", "repository_owner_id",
				"ref", "ref_type", "environment", "workflow", "workflow_ref",
				"job_workflow_ref", "run_id", "run_attempt", "event_name", "actor", "sha",
			},
			JobIDClaim:     "run_id",
			IdentityClaims: []string{"repository", "repository_id"},
			Shared:         true,
		},
		{
			Name: "gitlab",
			URL:  GitLabURL,
			Claims: []string{
				"project_id", "project_path", "namespace_id", "namespace_path",
				"ref", "ref_type", "ref_protected", "environment", "pipeline_id",
				"job_id", "user_login", "pipeline_source",
			},
			JobIDClaim:     "job_id",
			IdentityClaims: []string{"project_id", "project_path"},
			Shared:         true,
		},
	}
}

// PresetFor returns the preset whose URL is exactly url.
func PresetFor(url string) (Preset, bool) {
	i := slices.IndexFunc(Presets(), func(p Preset) bool { return p.URL == url })
	if i < 0 {
		return Preset{}, false
	}
	return Presets()[i], true
}

// JobID returns the identity's job (or run) id: the preset's JobIDClaim for a
// known issuer, else the first of "job_id", "run_id", "pipeline_id" present;
// "" when there is none.
func JobID(id *Identity) string {
	if id == nil {
		return ""
	}
	if p, ok := PresetFor(id.IssuerURL); ok {
		return id.Claims[p.JobIDClaim]
	}
	for _, c := range []string{"job_id", "run_id", "pipeline_id"} {
		if s := id.Claims[c]; s != "" {
			return s
		}
	}
	return ""
}
