package snapstore

import (
	"net/url"
	"strings"
)

// redacted replaces a secret in a URL.
const redacted = "xxxxx"

// secretParamParts are substrings of query parameter names whose values are
// secrets; secretParams are names that are secrets as a whole.
var (
	secretParamParts = []string{"secret", "password", "passwd", "token", "credential", "signature", "apikey", "api_key", "access_key", "accesskey"}
	secretParams     = map[string]bool{"sig": true, "sas": true, "key": true, "auth": true, "authorization": true}
)

// redactURL returns raw with the password of its user info and the values
// of secret-looking query parameters replaced by "xxxxx", leaving the rest
// exactly as given. A query value that is itself a URL with a password
// (e.g. an S3 endpoint) has that password redacted too.
func redactURL(raw string) string {
	base, query, hasQuery := strings.Cut(raw, "?")
	base = redactUserinfo(base)
	if !hasQuery {
		return base
	}
	params := strings.Split(query, "&")
	for i, param := range params {
		rawKey, rawValue, hasValue := strings.Cut(param, "=")
		if !hasValue {
			continue
		}
		key, err := url.QueryUnescape(rawKey)
		if err != nil {
			key = rawKey
		}
		if isSecretParam(key) {
			params[i] = rawKey + "=" + redacted
			continue
		}
		if value, err := url.QueryUnescape(rawValue); err == nil && strings.Contains(value, "@") {
			if r := redactUserinfo(value); r != value {
				params[i] = rawKey + "=" + url.QueryEscape(r)
			}
		}
	}
	return base + "?" + strings.Join(params, "&")
}

// redactUserinfo replaces the password in "scheme://user:password@host...".
func redactUserinfo(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	authority, path := rest, ""
	if i := strings.IndexAny(rest, "/#"); i >= 0 {
		authority, path = rest[:i], rest[i:]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return s
	}
	user, _, hasPassword := strings.Cut(authority[:at], ":")
	if !hasPassword {
		return s
	}
	return scheme + "://" + user + ":" + redacted + authority[at:] + path
}

func isSecretParam(name string) bool {
	name = strings.ToLower(name)
	if secretParams[name] {
		return true
	}
	for _, part := range secretParamParts {
		if strings.Contains(name, part) {
			return true
		}
	}
	return false
}

// secretsOf returns the secret strings redactURL hides in raw.
func secretsOf(raw string) []string {
	var secrets []string
	addPassword := func(s string) {
		if u, err := url.Parse(s); err == nil && u.User != nil {
			if p, ok := u.User.Password(); ok && p != "" {
				secrets = append(secrets, p)
			}
		}
	}
	base, query, _ := strings.Cut(raw, "?")
	addPassword(base)
	q, _ := url.ParseQuery(query)
	for key, values := range q {
		for _, v := range values {
			if isSecretParam(key) && v != "" {
				secrets = append(secrets, v)
			} else if strings.Contains(v, "@") {
				addPassword(v)
			}
		}
	}
	return secrets
}

// scrubbedError is an error whose message had secrets removed. It does not
// unwrap, so that the original message cannot leak.
type scrubbedError struct{ msg string }

func (e *scrubbedError) Error() string { return e.msg }

// scrubError returns err with every secret of the URL raw replaced in its
// message, or err itself if its message holds none.
func scrubError(err error, raw string) error {
	msg := err.Error()
	scrubbed := msg
	for _, s := range secretsOf(raw) {
		for _, form := range []string{s, url.QueryEscape(s), url.PathEscape(s)} {
			scrubbed = strings.ReplaceAll(scrubbed, form, redacted)
		}
	}
	if scrubbed == msg {
		return err
	}
	return &scrubbedError{msg: scrubbed}
}
