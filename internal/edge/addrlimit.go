package edge

import "time"

// siteFactor is how many client addresses' allowance an IPv6 /48 may spend in all. One IPv6
// client commonly holds a /64, which ClientKey limits as one address; but a site (a home, an
// office) is commonly given a /48, 65,536 /64s, and could call from a fresh /64, with a fresh
// allowance, each time. Its /48 is limited too, at this many times one address's limit: room
// for the many devices of a site, not for 65,536.
const siteFactor = 16

// AddressLimiter limits calls by client address (ClientKey) and, for IPv6, by the address's
// /48 as well, at siteFactor times the rate and burst.
type AddressLimiter struct {
	address, site *Limiter
}

// NewAddressLimiter allows perSecond calls a second per client address with bursts of burst.
func NewAddressLimiter(perSecond float64, burst int) *AddressLimiter {
	return &AddressLimiter{
		address: NewLimiter(perSecond, burst),
		site:    NewLimiter(perSecond*siteFactor, burst*siteFactor),
	}
}

// Allow reports whether the peer at peerAddr ("host:port") may make a call now; if not, how
// long until it may. A call the site's limit refuses uses up nothing of the address's.
func (l *AddressLimiter) Allow(peerAddr string) (bool, time.Duration) {
	site := siteKey(peerAddr)
	if site != "" {
		if ok, wait := l.site.peek(site); !ok {
			return false, wait
		}
	}
	if ok, wait := l.address.Allow(ClientKey(peerAddr)); !ok {
		return false, wait
	}
	if site != "" {
		// Charged now; a call of the site's that took its last token in between still counts,
		// just as this one goes through: at most one call each over the site's limit.
		l.site.Allow(site)
	}
	return true, 0
}

// Attempt is Limiter.Attempt for the peer's address and, for IPv6, its /48.
func (l *AddressLimiter) Attempt(peerAddr string) (done func(failed bool), ok bool, wait time.Duration) {
	doneAddr, ok, wait := l.address.Attempt(ClientKey(peerAddr))
	if !ok {
		return nil, false, wait
	}
	site := siteKey(peerAddr)
	if site == "" {
		return doneAddr, true, 0
	}
	doneSite, ok, wait := l.site.Attempt(site)
	if !ok {
		doneAddr(false)
		return nil, false, wait
	}
	return func(failed bool) { doneAddr(failed); doneSite(failed) }, true, 0
}

// siteKey is the /48 of an IPv6 peer address, "" for IPv4 (and what does not parse).
func siteKey(peerAddr string) string {
	_, ip, ok := peerIP(peerAddr)
	if !ok || ip.Is4() {
		return ""
	}
	p, err := ip.Prefix(48)
	if err != nil {
		return ""
	}
	return "site " + p.String()
}
