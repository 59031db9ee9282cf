// Package demo holds the demo chain that the one-process mode loads into an
// empty database: Harbor Coffee & Market, a coffee-and-convenience chain of 50
// stores spread over Seattle, WA, with a café menu plus a small retail catalog
// (about 200 SKUs) and deterministic per-store stock.
//
// It is plain Go data: no I/O, no database code, no randomness. Every call to
// [Seattle] returns the same chain (freshly allocated, so callers may modify
// their copy), and [Chain.Stock] is a pure function of the store id and SKU.
// Each service loads its own part: catalog the categories and products,
// inventory the stores and stock levels.
package demo

import (
	"hash/fnv"
	"slices"
	"time"
)

// Chain is a retail chain: its stores and the catalog they all sell.
type Chain struct {
	// Name is the chain's display name, e.g. "Harbor Coffee & Market".
	Name string
	// Currency is the ISO 4217 code every price is in ("USD").
	Currency string
	// TimeZone is the IANA zone of the chain's home city ("America/Los_Angeles").
	TimeZone string
	// Stores are the chain's stores, in a stable order.
	Stores []Store
	// Categories form a two-level tree (top-level categories have no ParentID).
	Categories []Category
	// Products are the catalog, in a stable order; each has 1–4 variants.
	Products []Product
}

// Store is one physical pickup location.
type Store struct {
	// ID is stable and URL-safe, e.g. "sea-capitol-hill-01".
	ID string
	// Name is the display name, e.g. "Harbor Capitol Hill (Broadway)".
	Name string
	// Address is the street address shoppers go to.
	Address Address
	// Lat and Lng are WGS 84 degrees.
	Lat, Lng float64
	// TimeZone is the IANA zone the opening hours are in.
	TimeZone string
	// Hours are the regular weekly opening hours, at most one entry per
	// weekday, Sunday first. A weekday without an entry is closed all day.
	Hours []DayHours
	// Exceptions override Hours on particular dates (holidays), by date.
	Exceptions []HoursException
	// PrepTime is how long staff typically take to prepare an order.
	PrepTime time.Duration
	// PickupWindow is how long a ready order is held before it expires.
	PickupWindow time.Duration
}

// Address is a postal address.
type Address struct {
	// Line1 is the street address, e.g. "401 Broadway E".
	Line1 string
	// City is the city, "Seattle".
	City string
	// Region is the state code, "WA".
	Region string
	// Postcode is the ZIP code, e.g. "98102".
	Postcode string
	// Country is the ISO 3166-1 alpha-2 code, "US".
	Country string
}

// DayHours are a store's opening hours on one weekday, in the store's time zone.
type DayHours struct {
	// Weekday is the day these hours apply to.
	Weekday time.Weekday
	// Open is the local opening time, "HH:MM" (24-hour clock).
	Open string
	// Close is the local closing time, "HH:MM", later than Open on the same
	// day; "24:00" means open until midnight.
	Close string
}

// HoursException replaces a store's regular hours on one date.
type HoursException struct {
	// Date is the local calendar date, "YYYY-MM-DD".
	Date string
	// Closed is true when the store is closed all day; Open and Close are then empty.
	Closed bool
	// Open and Close are the local hours that day when not Closed, in the
	// same format as DayHours.
	Open, Close string
	// Reason is a short human-readable label, e.g. "Christmas Day".
	Reason string
}

// Category groups products for browsing.
type Category struct {
	// ID is stable, e.g. "cat-espresso".
	ID string
	// Slug is URL-friendly, e.g. "espresso".
	Slug string
	// Name is the display name, e.g. "Espresso Drinks".
	Name string
	// ParentID is the parent category's ID; empty for a top-level category.
	ParentID string
}

// Product is a catalog item as shown to shoppers; what is priced, stocked and
// ordered are its variants.
type Product struct {
	// ID is stable, e.g. "prd-latte".
	ID string
	// Name is the display name, e.g. "Caffè Latte".
	Name string
	// Description is one short sentence.
	Description string
	// CategoryID is the (leaf) category the product is listed under.
	CategoryID string
	// ImageURLs are absolute URLs, the main image first.
	ImageURLs []string
	// Tags are lower-case labels for filtering, e.g. "hot", "vegan". The tag
	// "made-to-order" marks items prepared from ingredients (their stock
	// stands for ingredients); "limited" marks items short at most stores.
	Tags []string
	// Variants are the orderable SKUs, 1–4 of them.
	Variants []Variant
}

// Variant is one orderable SKU of a product, e.g. a 16 oz latte.
type Variant struct {
	// SKU is the stable, chain-wide unique stock-keeping code, e.g. "LATTE-16".
	SKU string
	// ProductID is the owning product's ID.
	ProductID string
	// Name tells the variant apart within its product, e.g. "16 oz".
	Name string
	// PriceMinor is the unit price in minor units of Currency (cents).
	PriceMinor int64
	// Currency is the ISO 4217 code, "USD".
	Currency string
}

// Level is the initial stock of one SKU at one store.
type Level struct {
	// OnHand is the number of units physically in the store.
	OnHand int32
	// SafetyStock is held back from online orders; OnHand - SafetyStock is
	// what can be reserved. Whenever OnHand > 0, at least one unit is sellable.
	SafetyStock int32
}

// Tags with a meaning for stock.
const (
	TagMadeToOrder = "made-to-order"
	TagLimited     = "limited"
)

// Seattle returns the demo chain. It is deterministic: every call returns an
// equal value, in freshly allocated slices.
func Seattle() Chain {
	return Chain{
		Name:       "Harbor Coffee & Market",
		Currency:   Currency,
		TimeZone:   timeZone,
		Stores:     seattleStores(),
		Categories: categories(),
		Products:   products(),
	}
}

// InTimeZone returns c with the chain and every store keeping their hours in zone instead: the
// same local hours, at another moment of the world's day.
func (c Chain) InTimeZone(zone string) Chain {
	c.TimeZone = zone
	c.Stores = slices.Clone(c.Stores)
	for i := range c.Stores {
		c.Stores[i].TimeZone = zone
	}
	return c
}

// SKUs returns every variant of every product, flattened in product order.
func (c Chain) SKUs() []Variant {
	var out []Variant
	for _, p := range c.Products {
		out = append(out, p.Variants...)
	}
	return out
}

// ProductOf returns the id of the product sku belongs to, or "" when no product has it.
func (c Chain) ProductOf(sku string) string {
	for _, p := range c.Products {
		if slices.ContainsFunc(p.Variants, func(v Variant) bool { return v.SKU == sku }) {
			return p.ID
		}
	}
	return ""
}

// Stock returns the initial stock of sku at storeID. It depends only on its
// arguments and the product's tags, so it is the same on every call and in
// every process. Unknown stores or SKUs have a zero Level.
//
// Made-to-order items have 200 on hand (ingredients), except that an
// ingredient has run out at about 2% of store/SKU pairs. Limited items are out
// at about 80% of stores and scarce elsewhere. Everything else has 1–60 on
// hand with 0–3 safety stock, and is out (0 on hand) at about 7% of pairs. Stores open around
// the clock are the chain's flagships and never run out of anything but limited items: at
// night they are the only ones open, and the demo journey must find one with its order.
func (c Chain) Stock(storeID, sku string) Level {
	i := slices.IndexFunc(c.Stores, func(s Store) bool { return s.ID == storeID })
	if i < 0 {
		return Level{}
	}
	flagship := openAroundTheClock(c.Stores[i])
	var tags []string
	found := false
	for _, p := range c.Products {
		if slices.ContainsFunc(p.Variants, func(v Variant) bool { return v.SKU == sku }) {
			tags, found = p.Tags, true
			break
		}
	}
	if !found {
		return Level{}
	}
	h := stockHash(storeID, sku)
	roll, qty, safety := h%100, (h>>8)%60, int32((h>>24)%4)
	switch {
	case slices.Contains(tags, TagMadeToOrder):
		if roll < 2 && !flagship {
			return Level{}
		}
		return Level{OnHand: 200, SafetyStock: 10}
	case slices.Contains(tags, TagLimited):
		if roll < 80 {
			return Level{}
		}
		return withSafety(int32(1+qty%6), safety)
	default:
		if roll < 7 && !flagship {
			return Level{}
		}
		return withSafety(int32(1+qty), safety)
	}
}

// openAroundTheClock says whether s is open 00:00–24:00 every day of the week.
func openAroundTheClock(s Store) bool {
	days := 0
	for _, h := range s.Hours {
		if h.Open != "00:00" || h.Close != "24:00" {
			return false
		}
		days++
	}
	return days == 7
}

// withSafety caps safety stock so that at least one unit stays sellable.
func withSafety(onHand, safety int32) Level {
	return Level{OnHand: onHand, SafetyStock: min(safety, onHand-1)}
}

// stockHash is FNV-1a of "storeID|sku", finished with the splitmix64 mixer so
// that every bit range is usable.
func stockHash(storeID, sku string) uint64 {
	f := fnv.New64a()
	f.Write([]byte(storeID))
	f.Write([]byte{'|'})
	f.Write([]byte(sku))
	h := f.Sum64()
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
