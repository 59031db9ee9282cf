package demo

import (
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // so LoadLocation works on machines without a zoneinfo database
)

func TestCounts(t *testing.T) {
	c := Seattle()
	if n := len(c.Stores); n < 45 || n > 55 {
		t.Errorf("stores = %d, want 45–55", n)
	}
	if n := len(c.SKUs()); n < 180 || n > 220 {
		t.Errorf("SKUs = %d, want 180–220", n)
	}
	t.Logf("%d stores, %d categories, %d products, %d SKUs", len(c.Stores), len(c.Categories), len(c.Products), len(c.SKUs()))
}

func TestDeterministic(t *testing.T) {
	a, b := Seattle(), Seattle()
	if !reflect.DeepEqual(a, b) {
		t.Fatal("Seattle() differs between calls")
	}
	// Fresh slices: changing one copy leaves the next call alone.
	a.Stores[0].Hours[0].Open = "xx"
	a.Products[0].Variants[0].PriceMinor = -1
	a.Products[0].Tags[0] = "xx"
	if !reflect.DeepEqual(b, Seattle()) {
		t.Fatal("Seattle() shares memory between calls")
	}
}

func TestUniqueIDs(t *testing.T) {
	c := Seattle()
	seen := map[string]bool{}
	unique := func(kind, id string) {
		t.Helper()
		if id == "" {
			t.Errorf("empty %s id", kind)
		}
		if seen[kind+":"+id] {
			t.Errorf("duplicate %s %q", kind, id)
		}
		seen[kind+":"+id] = true
	}
	storeID := regexp.MustCompile(`^sea-[a-z0-9-]+-\d\d$`)
	for _, s := range c.Stores {
		unique("store", s.ID)
		unique("store name", s.Name)
		if !storeID.MatchString(s.ID) {
			t.Errorf("store id %q is not like sea-<area>-NN", s.ID)
		}
	}
	for _, cat := range c.Categories {
		unique("category", cat.ID)
		unique("category slug", cat.Slug)
	}
	for _, p := range c.Products {
		unique("product", p.ID)
		unique("product name", p.Name)
	}
	for _, v := range c.SKUs() {
		unique("sku", v.SKU)
	}
}

func TestCatalog(t *testing.T) {
	c := Seattle()
	cats := map[string]Category{}
	for _, cat := range c.Categories {
		cats[cat.ID] = cat
	}
	for _, cat := range c.Categories {
		if cat.ParentID != "" {
			if _, ok := cats[cat.ParentID]; !ok {
				t.Errorf("category %s: parent %q does not exist", cat.ID, cat.ParentID)
			}
		}
		if cat.Name == "" || cat.Slug == "" {
			t.Errorf("category %s: empty name or slug", cat.ID)
		}
	}
	for _, p := range c.Products {
		if _, ok := cats[p.CategoryID]; !ok {
			t.Errorf("product %s: category %q does not exist", p.ID, p.CategoryID)
		}
		if p.Name == "" || p.Description == "" {
			t.Errorf("product %s: empty name or description", p.ID)
		}
		if len(p.ImageURLs) == 0 {
			t.Errorf("product %s: no images", p.ID)
		}
		for _, u := range p.ImageURLs {
			if !strings.HasPrefix(u, "https://images.example.com/") {
				t.Errorf("product %s: image %q not on images.example.com", p.ID, u)
			}
		}
		if n := len(p.Variants); n < 1 || n > 4 {
			t.Errorf("product %s: %d variants, want 1–4", p.ID, n)
		}
		for _, v := range p.Variants {
			if v.PriceMinor <= 0 {
				t.Errorf("sku %s: price %d, want > 0", v.SKU, v.PriceMinor)
			}
			if v.Currency != "USD" || v.Currency != c.Currency {
				t.Errorf("sku %s: currency %q", v.SKU, v.Currency)
			}
			if v.ProductID != p.ID {
				t.Errorf("sku %s: product id %q, want %q", v.SKU, v.ProductID, p.ID)
			}
			if v.Name == "" {
				t.Errorf("sku %s: empty variant name", v.SKU)
			}
		}
	}
	if got, want := len(c.SKUs()), 0; got == want {
		t.Fatal("no SKUs")
	}
}

func TestStoresLocationAndAddress(t *testing.T) {
	c := Seattle()
	if _, err := time.LoadLocation(c.TimeZone); err != nil {
		t.Errorf("chain time zone %q: %v", c.TimeZone, err)
	}
	postcode := regexp.MustCompile(`^98\d{3}$`)
	for _, s := range c.Stores {
		if s.Lat < 47.49 || s.Lat > 47.73 || s.Lng < -122.43 || s.Lng > -122.24 {
			t.Errorf("store %s at %v,%v is outside Seattle", s.ID, s.Lat, s.Lng)
		}
		if _, err := time.LoadLocation(s.TimeZone); err != nil {
			t.Errorf("store %s time zone %q: %v", s.ID, s.TimeZone, err)
		}
		a := s.Address
		if a.Line1 == "" || a.City != "Seattle" || a.Region != "WA" || a.Country != "US" || !postcode.MatchString(a.Postcode) {
			t.Errorf("store %s: bad address %+v", s.ID, a)
		}
		if s.PrepTime < 4*time.Minute || s.PrepTime > 12*time.Minute {
			t.Errorf("store %s: prep time %v, want 4–12m", s.ID, s.PrepTime)
		}
		if s.PickupWindow < 30*time.Minute || s.PickupWindow > 120*time.Minute {
			t.Errorf("store %s: pickup window %v, want 30m–2h", s.ID, s.PickupWindow)
		}
	}
}

var hhmm = regexp.MustCompile(`^([01]\d|2[0-3]):[0-5]\d$`)

func checkSpan(t *testing.T, what, open, close string) {
	t.Helper()
	if !hhmm.MatchString(open) {
		t.Errorf("%s: open %q is not HH:MM", what, open)
	}
	if close != "24:00" && !hhmm.MatchString(close) {
		t.Errorf("%s: close %q is not HH:MM or 24:00", what, close)
	}
	if open >= close { // zero-padded, so string order is time order
		t.Errorf("%s: open %s is not before close %s", what, open, close)
	}
}

func TestOpeningHours(t *testing.T) {
	closedSunday := 0
	for _, s := range Seattle().Stores {
		if len(s.Hours) == 0 {
			t.Errorf("store %s: no opening hours", s.ID)
		}
		for i, h := range s.Hours {
			if i > 0 && h.Weekday <= s.Hours[i-1].Weekday {
				t.Errorf("store %s: hours not one per weekday, Sunday first", s.ID)
			}
			checkSpan(t, s.ID+" "+h.Weekday.String(), h.Open, h.Close)
		}
		if !slices.ContainsFunc(s.Hours, func(h DayHours) bool { return h.Weekday == time.Sunday }) {
			closedSunday++
		}
		dates := map[string]bool{}
		for _, e := range s.Exceptions {
			if _, err := time.Parse(time.DateOnly, e.Date); err != nil {
				t.Errorf("store %s: exception date %q: %v", s.ID, e.Date, err)
			}
			if dates[e.Date] {
				t.Errorf("store %s: two exceptions on %s", s.ID, e.Date)
			}
			dates[e.Date] = true
			if e.Reason == "" {
				t.Errorf("store %s %s: no reason", s.ID, e.Date)
			}
			if e.Closed {
				if e.Open != "" || e.Close != "" {
					t.Errorf("store %s %s: closed but has hours", s.ID, e.Date)
				}
				continue
			}
			checkSpan(t, s.ID+" "+e.Date, e.Open, e.Close)
		}
	}
	if closedSunday == 0 {
		t.Error("no store is closed on Sundays")
	}
}

func TestStock(t *testing.T) {
	c, again := Seattle(), Seattle()
	skus := c.SKUs()
	var zero, positive, total int
	for _, s := range c.Stores {
		for _, v := range skus {
			l := c.Stock(s.ID, v.SKU)
			if l != c.Stock(s.ID, v.SKU) || l != again.Stock(s.ID, v.SKU) {
				t.Fatalf("Stock(%s, %s) is not deterministic", s.ID, v.SKU)
			}
			if l.OnHand < 0 || l.OnHand > 200 || l.SafetyStock < 0 || l.SafetyStock > 10 {
				t.Errorf("Stock(%s, %s) = %+v out of range", s.ID, v.SKU, l)
			}
			if l.OnHand > 0 && l.OnHand-l.SafetyStock < 1 {
				t.Errorf("Stock(%s, %s) = %+v: nothing sellable", s.ID, v.SKU, l)
			}
			total++
			if l.OnHand == 0 {
				zero++
			} else {
				positive++
			}
		}
	}
	frac := float64(zero) / float64(total)
	t.Logf("%d of %d store/SKU pairs out of stock (%.1f%%)", zero, total, 100*frac)
	if frac < 0.05 || frac > 0.10 {
		t.Errorf("out-of-stock fraction %.3f, want 5–10%%", frac)
	}
	if positive == 0 {
		t.Error("nothing in stock")
	}

	if l := c.Stock("sea-nowhere-01", "LATTE-16"); l != (Level{}) {
		t.Errorf("unknown store: %+v", l)
	}
	if l := c.Stock(c.Stores[0].ID, "NO-SUCH-SKU"); l != (Level{}) {
		t.Errorf("unknown SKU: %+v", l)
	}

	// Made-to-order drinks have ingredient-level stock; limited items are
	// out at most stores.
	latteOut, limitedOut := 0, 0
	for _, s := range c.Stores {
		if l := c.Stock(s.ID, "LATTE-16"); l.OnHand == 0 {
			latteOut++
		} else if l.OnHand != 200 {
			t.Errorf("LATTE-16 at %s: %+v, want 200 on hand", s.ID, l)
		}
		if c.Stock(s.ID, "CARDBUN").OnHand == 0 {
			limitedOut++
		}
	}
	if latteOut > len(c.Stores)/10 {
		t.Errorf("LATTE-16 out at %d stores", latteOut)
	}
	if limitedOut <= len(c.Stores)/2 {
		t.Errorf("limited CARDBUN out at only %d of %d stores", limitedOut, len(c.Stores))
	}
}

// At night only the stores open around the clock take orders: they must have everything but
// limited items, or the demo journey finds no store at those hours.
func TestStoresOpenAroundTheClockNeverRunOut(t *testing.T) {
	c := Seattle()
	flagships := 0
	for _, s := range c.Stores {
		if !openAroundTheClock(s) {
			continue
		}
		flagships++
		for _, p := range c.Products {
			if slices.Contains(p.Tags, TagLimited) {
				continue
			}
			for _, v := range p.Variants {
				if l := c.Stock(s.ID, v.SKU); l.OnHand-l.SafetyStock < 1 {
					t.Errorf("%s (open around the clock) has %+v of %s; want some to sell", s.ID, l, v.SKU)
				}
			}
		}
	}
	if flagships == 0 {
		t.Fatal("no store of the demo chain is open around the clock")
	}
}

func TestInTimeZoneMovesEveryStoreAndLeavesTheChainItCameFrom(t *testing.T) {
	c := Seattle()
	moved := c.InTimeZone("Etc/GMT-3")
	if moved.TimeZone != "Etc/GMT-3" {
		t.Errorf("chain zone %q", moved.TimeZone)
	}
	for i, s := range moved.Stores {
		if s.TimeZone != "Etc/GMT-3" {
			t.Errorf("store %s in %q", s.ID, s.TimeZone)
		}
		if c.Stores[i].TimeZone != timeZone {
			t.Errorf("the original's store %s moved to %q", s.ID, c.Stores[i].TimeZone)
		}
		if !reflect.DeepEqual(s.Hours, c.Stores[i].Hours) {
			t.Errorf("store %s's hours changed", s.ID)
		}
	}
}
