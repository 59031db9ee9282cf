package demo

import "time"

// Currency is the ISO 4217 code the demo chain is priced in.
const Currency = "USD"

const timeZone = "America/Los_Angeles"

// hoursProfile names a weekly opening-hours pattern shared by several stores.
type hoursProfile int

const (
	standard   hoursProfile = iota // Mon–Fri 06:00–20:00, Sat–Sun 07:00–20:00
	daily                          // every day 06:00–20:00
	late                           // every day 06:00–24:00
	allDay                         // open around the clock
	office                         // Mon–Fri 05:30–18:00, Sat 08:00–15:00, closed Sunday
	shortWkend                     // Mon–Fri 06:00–19:00, Sat–Sun 08:00–16:00
	early                          // Mon–Fri 05:00–19:00, Sat–Sun 06:00–17:00
	market                         // every day 07:00–18:00 (Pike Place Market hours)
)

// storeRow is one line of the store table.
type storeRow struct {
	id, name, line1, postcode string
	lat, lng                  float64
	hours                     hoursProfile
	prepMin, windowMin        int
}

// storeTable lists the stores roughly south-to-north by area. Coordinates are
// those of the street address.
var storeTable = []storeRow{
	// Downtown and around
	{"sea-downtown-01", "Downtown (4th & Pike)", "1501 4th Ave", "98101", 47.6106, -122.3377, daily, 6, 60},
	{"sea-downtown-02", "Financial District", "1000 2nd Ave", "98104", 47.6053, -122.3356, office, 5, 45},
	{"sea-pike-place-01", "Pike Place Market", "1530 Post Alley", "98101", 47.6094, -122.3418, market, 8, 45},
	{"sea-belltown-01", "Belltown", "2200 2nd Ave", "98121", 47.6135, -122.3446, allDay, 6, 60},
	{"sea-denny-triangle-01", "Denny Triangle", "2001 8th Ave", "98121", 47.6166, -122.3376, shortWkend, 5, 45},
	{"sea-pioneer-square-01", "Pioneer Square", "212 1st Ave S", "98104", 47.6005, -122.3343, office, 7, 60},
	{"sea-chinatown-id-01", "Chinatown-International District", "600 S Jackson St", "98104", 47.5991, -122.3255, daily, 7, 60},
	{"sea-first-hill-01", "First Hill", "1100 Madison St", "98104", 47.6089, -122.3247, shortWkend, 6, 45},
	{"sea-slu-01", "South Lake Union (Westlake)", "400 Westlake Ave N", "98109", 47.6222, -122.3387, shortWkend, 5, 30},
	{"sea-slu-02", "South Lake Union (Dexter)", "1100 Dexter Ave N", "98109", 47.6290, -122.3423, standard, 6, 45},
	// Capitol Hill, Central District and the lake side
	{"sea-capitol-hill-01", "Capitol Hill (Broadway)", "401 Broadway E", "98102", 47.6223, -122.3210, late, 7, 60},
	{"sea-capitol-hill-02", "Capitol Hill (Pike/Pine)", "1001 E Pike St", "98122", 47.6140, -122.3196, late, 8, 60},
	{"sea-capitol-hill-03", "Capitol Hill (15th Ave E)", "524 15th Ave E", "98112", 47.6237, -122.3128, standard, 6, 90},
	{"sea-eastlake-01", "Eastlake", "2300 Eastlake Ave E", "98102", 47.6405, -122.3254, standard, 5, 60},
	{"sea-montlake-01", "Montlake", "2300 24th Ave E", "98112", 47.6391, -122.3010, standard, 6, 90},
	{"sea-madison-valley-01", "Madison Valley", "2800 E Madison St", "98112", 47.6240, -122.2951, standard, 7, 90},
	{"sea-madison-park-01", "Madison Park", "4100 E Madison St", "98112", 47.6356, -122.2800, shortWkend, 8, 120},
	{"sea-central-district-01", "Central District", "2301 E Union St", "98122", 47.6128, -122.3024, daily, 6, 60},
	{"sea-leschi-01", "Leschi", "123 Lakeside Ave", "98122", 47.6010, -122.2872, shortWkend, 9, 120},
	// South end
	{"sea-sodo-01", "SODO", "1700 1st Ave S", "98134", 47.5872, -122.3345, early, 4, 30},
	{"sea-georgetown-01", "Georgetown", "6019 Airport Way S", "98108", 47.5476, -122.3214, early, 6, 60},
	{"sea-south-park-01", "South Park", "8600 14th Ave S", "98108", 47.5271, -122.3140, early, 7, 90},
	{"sea-beacon-hill-01", "Beacon Hill", "2500 Beacon Ave S", "98144", 47.5790, -122.3114, daily, 7, 60},
	{"sea-columbia-city-01", "Columbia City", "4860 Rainier Ave S", "98118", 47.5593, -122.2857, daily, 8, 90},
	{"sea-rainier-valley-01", "Rainier Valley (Hillman City)", "5600 Rainier Ave S", "98118", 47.5511, -122.2771, standard, 7, 90},
	{"sea-rainier-valley-02", "Rainier Valley (Othello)", "7100 Martin Luther King Jr Way S", "98118", 47.5381, -122.2815, daily, 8, 60},
	{"sea-rainier-beach-01", "Rainier Beach", "9200 Rainier Ave S", "98118", 47.5224, -122.2690, standard, 9, 120},
	// West Seattle
	{"sea-west-seattle-01", "West Seattle Junction", "4520 California Ave SW", "98116", 47.5612, -122.3868, daily, 7, 60},
	{"sea-west-seattle-02", "West Seattle (Admiral)", "2600 California Ave SW", "98116", 47.5812, -122.3868, standard, 6, 90},
	{"sea-alki-01", "Alki", "2700 Alki Ave SW", "98116", 47.5779, -122.4092, standard, 10, 120},
	{"sea-morgan-junction-01", "Morgan Junction", "6500 California Ave SW", "98136", 47.5448, -122.3870, standard, 8, 90},
	{"sea-westwood-01", "Westwood Village", "2600 SW Barton St", "98126", 47.5215, -122.3652, daily, 7, 60},
	// Queen Anne, Magnolia and the northwest
	{"sea-queen-anne-01", "Queen Anne", "1800 Queen Anne Ave N", "98109", 47.6378, -122.3568, daily, 6, 60},
	{"sea-queen-anne-02", "Lower Queen Anne", "521 1st Ave N", "98109", 47.6239, -122.3555, late, 5, 45},
	{"sea-magnolia-01", "Magnolia Village", "3300 W McGraw St", "98199", 47.6396, -122.3990, shortWkend, 10, 120},
	{"sea-ballard-01", "Ballard (Market St)", "2208 NW Market St", "98107", 47.6686, -122.3860, daily, 7, 60},
	{"sea-ballard-02", "Ballard (15th Ave NW)", "5700 15th Ave NW", "98107", 47.6706, -122.3765, early, 5, 45},
	{"sea-crown-hill-01", "Crown Hill", "8900 15th Ave NW", "98117", 47.6925, -122.3765, standard, 6, 90},
	{"sea-fremont-01", "Fremont", "3410 Fremont Ave N", "98103", 47.6509, -122.3499, late, 7, 60},
	{"sea-wallingford-01", "Wallingford", "1815 N 45th St", "98103", 47.6613, -122.3345, daily, 8, 90},
	{"sea-phinney-ridge-01", "Phinney Ridge", "6200 Phinney Ave N", "98103", 47.6728, -122.3540, standard, 9, 90},
	{"sea-greenwood-01", "Greenwood", "8500 Greenwood Ave N", "98103", 47.6905, -122.3555, daily, 8, 90},
	{"sea-bitter-lake-01", "Bitter Lake", "13000 Aurora Ave N", "98133", 47.7226, -122.3446, allDay, 6, 60},
	// North end
	{"sea-green-lake-01", "Green Lake", "7200 Woodlawn Ave NE", "98115", 47.6810, -122.3246, daily, 7, 60},
	{"sea-u-district-01", "U District (The Ave)", "4500 University Way NE", "98105", 47.6615, -122.3131, late, 6, 45},
	{"sea-u-district-02", "U District (University Village)", "2623 NE University Village St", "98105", 47.6627, -122.2995, standard, 8, 90},
	{"sea-roosevelt-01", "Roosevelt", "6500 Roosevelt Way NE", "98115", 47.6761, -122.3175, daily, 6, 60},
	{"sea-wedgwood-01", "Wedgwood", "8500 35th Ave NE", "98115", 47.6905, -122.2906, standard, 12, 120},
	{"sea-northgate-01", "Northgate", "401 NE Northgate Way", "98125", 47.7079, -122.3242, allDay, 5, 60},
	{"sea-lake-city-01", "Lake City", "12500 Lake City Way NE", "98125", 47.7199, -122.2955, daily, 8, 90},
}

func seattleStores() []Store {
	out := make([]Store, 0, len(storeTable))
	for _, r := range storeTable {
		out = append(out, Store{
			ID:   r.id,
			Name: "Harbor " + r.name,
			Address: Address{
				Line1: r.line1, City: "Seattle", Region: "WA", Postcode: r.postcode, Country: "US",
			},
			Lat: r.lat, Lng: r.lng,
			TimeZone:     timeZone,
			Hours:        weeklyHours(r.hours),
			Exceptions:   holidayHours(r.hours),
			PrepTime:     time.Duration(r.prepMin) * time.Minute,
			PickupWindow: time.Duration(r.windowMin) * time.Minute,
		})
	}
	return out
}

// weeklyHours expands a profile into one entry per open weekday, Sunday first.
func weeklyHours(p hoursProfile) []DayHours {
	// weekday and weekend hours; an empty sunday.open means closed on Sunday.
	type span struct{ open, close string }
	var wk, sat, sun span
	switch p {
	case standard:
		wk, sat, sun = span{"06:00", "20:00"}, span{"07:00", "20:00"}, span{"07:00", "20:00"}
	case daily:
		wk, sat, sun = span{"06:00", "20:00"}, span{"06:00", "20:00"}, span{"06:00", "20:00"}
	case late:
		wk, sat, sun = span{"06:00", "24:00"}, span{"06:00", "24:00"}, span{"06:00", "24:00"}
	case allDay:
		wk, sat, sun = span{"00:00", "24:00"}, span{"00:00", "24:00"}, span{"00:00", "24:00"}
	case office:
		wk, sat = span{"05:30", "18:00"}, span{"08:00", "15:00"}
	case shortWkend:
		wk, sat, sun = span{"06:00", "19:00"}, span{"08:00", "16:00"}, span{"08:00", "16:00"}
	case early:
		wk, sat, sun = span{"05:00", "19:00"}, span{"06:00", "17:00"}, span{"06:00", "17:00"}
	case market:
		wk, sat, sun = span{"07:00", "18:00"}, span{"07:00", "18:00"}, span{"07:00", "18:00"}
	}
	var out []DayHours
	for d := time.Sunday; d <= time.Saturday; d++ {
		s := wk
		switch d {
		case time.Saturday:
			s = sat
		case time.Sunday:
			s = sun
		}
		if s.open != "" {
			out = append(out, DayHours{Weekday: d, Open: s.open, Close: s.close})
		}
	}
	return out
}

// holidayHours are the 2026–27 holiday exceptions for a profile: office
// stores close on the holidays, round-the-clock stores stay open shorter.
func holidayHours(p hoursProfile) []HoursException {
	closed := func(date, reason string) HoursException {
		return HoursException{Date: date, Closed: true, Reason: reason}
	}
	open := func(date, from, to, reason string) HoursException {
		return HoursException{Date: date, Open: from, Close: to, Reason: reason}
	}
	switch p {
	case office:
		return []HoursException{
			closed("2026-11-26", "Thanksgiving"),
			open("2026-12-24", "05:30", "14:00", "Christmas Eve"),
			closed("2026-12-25", "Christmas Day"),
			open("2026-12-31", "05:30", "15:00", "New Year's Eve"),
			closed("2027-01-01", "New Year's Day"),
		}
	case allDay:
		return []HoursException{
			open("2026-12-24", "00:00", "20:00", "Christmas Eve"),
			open("2026-12-25", "08:00", "18:00", "Christmas Day"),
			open("2026-12-31", "00:00", "22:00", "New Year's Eve"),
		}
	default:
		return []HoursException{
			open("2026-11-26", "08:00", "14:00", "Thanksgiving"),
			open("2026-12-24", "07:00", "15:00", "Christmas Eve"),
			closed("2026-12-25", "Christmas Day"),
			open("2026-12-31", "07:00", "17:00", "New Year's Eve"),
			open("2027-01-01", "09:00", "17:00", "New Year's Day"),
		}
	}
}
