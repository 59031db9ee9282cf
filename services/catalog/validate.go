package catalog

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	catalogv1 "github.com/handoff-dev/handoff/proto/handoff/catalog/v1"

	"github.com/handoff-dev/handoff/internal/money"
	"github.com/handoff-dev/handoff/internal/rpcerr"
)

var (
	// SKU codes travel through POS systems and printed labels: keep them plain.
	skuPattern = regexp.MustCompile(`^[A-Z0-9][A-Z0-9._-]{0,63}$`)
	// Ids and slugs appear in URLs.
	idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
)

const (
	maxNameLen        = 200
	maxDescriptionLen = 2000
	maxImages         = 10
	maxTags           = 20
	maxTagLen         = 40
	maxVariants       = 50
	maxURLLen         = 2048
	maxAltTextLen     = 500
)

// validateProduct checks a product as it will be stored, reporting every bad field under
// prefix (e.g. "product"). An image URL the product has already (stored, of an update) is held
// to the rules of its day only (checkImageURL): one taken by an older, laxer check must not
// block every later change of the product, a price change that never sent it included.
func (s *Service) validateProduct(p *catalogv1.Product, prefix string, v *rpcerr.Violations, stored ...*catalogv1.Image) {
	if p.GetId() != "" && !idPattern.MatchString(p.GetId()) {
		v.Add(prefix+".id", "must be 1-64 of a-z, 0-9, '-', '_', starting with a letter or digit")
	}
	checkText(v, prefix+".name", p.GetName(), maxNameLen, true)
	checkText(v, prefix+".description", p.GetDescription(), maxDescriptionLen, false)
	if p.GetCategoryId() == "" {
		v.Add(prefix+".category_id", "required")
	}
	if n := len(p.GetImages()); n > maxImages {
		v.Addf(prefix+".images", "at most %d images, got %d", maxImages, n)
	}
	had := make(map[string]bool, len(stored))
	for _, img := range stored {
		had[img.GetUrl()] = true
	}
	for i, img := range p.GetImages() {
		field := fmt.Sprintf("%s.images[%d].url", prefix, i)
		switch {
		case img.GetUrl() == "":
			v.Add(field, "required")
		case len(img.GetUrl()) > maxURLLen:
			v.Addf(field, "longer than %d characters", maxURLLen)
		default:
			if why := checkImageURL(img.GetUrl(), had[img.GetUrl()]); why != "" {
				v.Add(field, why)
			}
		}
		checkText(v, fmt.Sprintf("%s.images[%d].alt_text", prefix, i), img.GetAltText(), maxAltTextLen, false)
	}
	if n := len(p.GetTags()); n > maxTags {
		v.Addf(prefix+".tags", "at most %d tags, got %d", maxTags, n)
	}
	for i, tag := range p.GetTags() {
		checkText(v, fmt.Sprintf("%s.tags[%d]", prefix, i), tag, maxTagLen, true)
	}
	switch n := len(p.GetVariants()); {
	case n == 0:
		v.Add(prefix+".variants", "at least one variant is required")
	case n > maxVariants:
		v.Addf(prefix+".variants", "at most %d variants, got %d", maxVariants, n)
	}
	seen := make(map[string]int, len(p.GetVariants()))
	for i, vr := range p.GetVariants() {
		field := fmt.Sprintf("%s.variants[%d]", prefix, i)
		switch {
		case vr.GetSku() == "":
			v.Add(field+".sku", "required")
		case !skuPattern.MatchString(vr.GetSku()):
			v.Addf(field+".sku", "%q must be 1-64 of A-Z, 0-9, '.', '_', '-'", rpcerr.Echo(vr.GetSku()))
		default:
			if j, dup := seen[vr.GetSku()]; dup {
				v.Addf(field+".sku", "%q repeats variants[%d]", rpcerr.Echo(vr.GetSku()), j)
			}
			seen[vr.GetSku()] = i
		}
		checkText(v, field+".name", vr.GetName(), maxNameLen, true)
		switch price := vr.GetPrice(); {
		case price == nil:
			v.Add(field+".price", "required")
		case price.GetAmountMinor() < 0 || price.GetAmountMinor() > money.MaxAmountMinor:
			v.Addf(field+".price.amount_minor", "must be between 0 and %d, got %d", money.MaxAmountMinor, price.GetAmountMinor())
		case price.GetCurrencyCode() != s.currency:
			v.Addf(field+".price.currency_code", "must be %s (the catalog's currency), got %q", s.currency, price.GetCurrencyCode())
		}
	}
}

func validateCategory(c *catalogv1.Category, v *rpcerr.Violations) {
	if c.GetId() != "" && !idPattern.MatchString(c.GetId()) {
		v.Add("category.id", "must be 1-64 of a-z, 0-9, '-', '_'")
	}
	if !idPattern.MatchString(c.GetSlug()) {
		v.Add("category.slug", "required: 1-64 of a-z, 0-9, '-', '_'")
	} else if c.GetId() == "" && !idPattern.MatchString(defaultCategoryID(c.GetSlug())) {
		// Else the category would get an id no product could name in its category_ids.
		v.Addf("category.id", "required with a slug of more than %d characters: the id made from the slug, %s, would be longer than 64", 64-len(categoryIDPrefix), defaultCategoryID("<slug>"))
	}
	checkText(v, "category.name", c.GetName(), maxNameLen, true)
}

func checkText(v *rpcerr.Violations, field, s string, max int, required bool) {
	switch {
	case required && strings.TrimSpace(s) == "":
		v.Add(field, "required")
	case !utf8.ValidString(s):
		v.Add(field, "must be valid UTF-8")
	case utf8.RuneCountInString(s) > max:
		v.Addf(field, "at most %d characters, got %d", max, utf8.RuneCountInString(s))
	}
}

// categoryIDPrefix makes a category's id from its slug when the id is not given.
const categoryIDPrefix = "cat-"

func defaultCategoryID(slug string) string { return categoryIDPrefix + slug }

// checkImageURL says what is wrong with an image's URL, or nothing. Apps put it in an <img> or
// fetch it as given, so it must be one they can load, written as a URL is sent: https only (an
// app served over https shows no mixed content), no credentials, a host name or address, a port
// that exists, and only the characters a URL is made of, with whole %-escapes (a raw space or
// quote would break the page that shows it).
//
// A URL the product has already (stored) is held to the first rule only, https without
// credentials, which every build since ce25815 has kept: the rest came later, and a URL stored
// before must not block every later change of its product.
func checkImageURL(raw string, stored bool) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.User != nil || u.Opaque != "" {
		return "must be an absolute https URL without credentials"
	}
	if stored {
		return ""
	}
	host := u.Hostname()
	if net.ParseIP(host) == nil && !hostName.MatchString(host) {
		if strings.ContainsFunc(host, func(r rune) bool { return r >= utf8.RuneSelf }) {
			return fmt.Sprintf("host %q is to be given in its ASCII (punycode, xn--…) form", host)
		}
		return fmt.Sprintf("host %q is not a host name", host)
	}
	for i, r := range raw {
		switch {
		case r == '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return "has a % not followed by two hex digits: escape it as %25"
			}
		case r >= utf8.RuneSelf || !strings.ContainsRune(urlChars, r):
			return fmt.Sprintf("has %q, which a URL carries %%-escaped (%s)", r, url.PathEscape(string(r)))
		}
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("port %q is not 1 to 65535", p)
		}
	}
	return ""
}

// urlChars are RFC 3986's unreserved and reserved characters, less ' (it ends an HTML
// attribute quoted with it); % is checked on its own.
const urlChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&()*+,;="

// hostName is a DNS name: dot-separated labels of letters, digits, inner hyphens and
// underscores (which DNS allows, and some storage buckets' names have).
var hostName = regexp.MustCompile(`^(?i:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)(?:\.(?i:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?))*\.?$`)

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
