package demo

const imageBase = "https://images.example.com/harbor/products/"

func categories() []Category {
	return []Category{
		{"cat-cafe", "cafe", "Café", ""},
		{"cat-espresso", "espresso", "Espresso Drinks", "cat-cafe"},
		{"cat-brewed", "brewed-coffee", "Brewed Coffee", "cat-cafe"},
		{"cat-tea", "tea", "Tea & Hot Chocolate", "cat-cafe"},
		{"cat-cold", "cold-drinks", "Cold Drinks", "cat-cafe"},
		{"cat-bakery", "bakery", "Bakery", "cat-cafe"},
		{"cat-breakfast", "breakfast", "Breakfast", "cat-cafe"},
		{"cat-lunch", "lunch", "Lunch", "cat-cafe"},
		{"cat-market", "market", "Market", ""},
		{"cat-coffee-at-home", "coffee-at-home", "Coffee & Tea at Home", "cat-market"},
		{"cat-drinkware", "drinkware", "Mugs & Drinkware", "cat-market"},
		{"cat-snacks", "snacks", "Snacks", "cat-market"},
		{"cat-grocery", "grocery", "Grocery Staples", "cat-market"},
	}
}

// vs is a variant spec: SKU suffix (empty: the SKU is the product code alone),
// variant name and price in cents.
type vs struct {
	suffix, name string
	price        int64
}

// Variant tables. Drink sizes step up 50¢ per size.
func hot(base int64) []vs {
	return []vs{{"12", "12 oz", base}, {"16", "16 oz", base + 50}, {"20", "20 oz", base + 100}}
}
func hot2(base int64) []vs { return hot(base)[:2] }
func iced(base int64) []vs {
	return []vs{{"16", "16 oz", base}, {"20", "20 oz", base + 50}, {"24", "24 oz", base + 100}}
}
func iced2(base int64) []vs { return iced(base)[:2] }
func each(price int64) []vs { return []vs{{"", "Each", price}} }
func one(name string, price int64) []vs {
	return []vs{{"", name, price}}
}
func beans(small, large int64) []vs {
	return []vs{{"250G", "250 g whole bean", small}, {"1KG", "1 kg whole bean", large}}
}
func cupBowl(cup int64) []vs {
	return []vs{{"CUP", "Cup (8 oz)", cup}, {"BOWL", "Bowl (16 oz)", cup + 200}}
}

// opts is one price for several flavours; pairs are suffix, name, suffix, name, ...
func opts(price int64, pairs ...string) []vs {
	out := make([]vs, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, vs{pairs[i], pairs[i+1], price})
	}
	return out
}

// productRow is one line of the catalog table. The product ID is "prd-"+slug.
type productRow struct {
	slug, code, name, desc, cat string
	tags                        []string
	vars                        []vs
}

func tags(t ...string) []string { return t }

const (
	mto     = TagMadeToOrder
	limited = TagLimited
)

var productTable = []productRow{
	// Espresso drinks
	{"espresso", "ESPRESSO", "Espresso", "A short, syrupy shot of our house espresso roast.", "cat-espresso", tags(mto, "hot"),
		[]vs{{"S", "Single shot", 275}, {"D", "Double shot", 325}}},
	{"espresso-macchiato", "MACCHIATO", "Espresso Macchiato", "Double espresso marked with a spoonful of milk foam.", "cat-espresso", tags(mto, "hot"), one("Double", 350)},
	{"cortado", "CORTADO", "Cortado", "Double espresso cut with an equal amount of steamed milk.", "cat-espresso", tags(mto, "hot"), one("8 oz", 375)},
	{"cappuccino", "CAPPUCCINO", "Cappuccino", "Espresso under a deep cap of velvety milk foam.", "cat-espresso", tags(mto, "hot", "bestseller"), hot(450)},
	{"latte", "LATTE", "Caffè Latte", "Espresso with steamed milk and a thin layer of foam.", "cat-espresso", tags(mto, "hot", "bestseller"), hot(450)},
	{"flat-white", "FLATWHITE", "Flat White", "Ristretto shots with silky microfoam milk.", "cat-espresso", tags(mto, "hot"), hot2(475)},
	{"americano", "AMERICANO", "Caffè Americano", "Espresso topped up with hot water.", "cat-espresso", tags(mto, "hot", "vegan"), hot(350)},
	{"mocha", "MOCHA", "Caffè Mocha", "Espresso, dark chocolate sauce and steamed milk.", "cat-espresso", tags(mto, "hot"), hot(525)},
	{"white-mocha", "WMOCHA", "White Chocolate Mocha", "Espresso with white chocolate sauce and steamed milk.", "cat-espresso", tags(mto, "hot"), hot(550)},
	{"caramel-macchiato", "CARMAC", "Caramel Macchiato", "Vanilla milk marked with espresso and a caramel drizzle.", "cat-espresso", tags(mto, "hot"), hot(535)},
	{"vanilla-latte", "VLATTE", "Vanilla Latte", "Our latte sweetened with house-made vanilla syrup.", "cat-espresso", tags(mto, "hot"), hot(500)},
	{"honey-lavender-latte", "HLLATTE", "Honey Lavender Latte", "Latte with local honey and a hint of lavender.", "cat-espresso", tags(mto, "hot", "local"), hot(550)},
	// Brewed coffee
	{"drip-coffee", "DRIP", "House Drip Coffee", "Our medium-roast Harbor Blend, brewed fresh all day.", "cat-brewed", tags(mto, "hot", "vegan", "bestseller"), hot(275)},
	{"dark-roast", "DARK", "Dark Roast Drip", "A bold, smoky dark roast, brewed fresh.", "cat-brewed", tags(mto, "hot", "vegan"), hot(275)},
	{"decaf-drip", "DECAF", "Decaf Drip Coffee", "Swiss Water decaf with all of the flavour.", "cat-brewed", tags(mto, "hot", "vegan", "decaf"), hot2(275)},
	{"pour-over", "POUROVER", "Pour-Over", "This week's single origin, hand-poured to order.", "cat-brewed", tags(mto, "hot", "vegan", "single-origin"), one("12 oz", 450)},
	{"cafe-au-lait", "AULAIT", "Café au Lait", "Half drip coffee, half steamed milk.", "cat-brewed", tags(mto, "hot"), hot(350)},
	{"coffee-traveler", "TRAVELER", "Coffee Traveler", "96 oz of drip coffee with cups, for the office.", "cat-brewed", tags(mto, "hot", "serves-12"), one("96 oz box", 2495)},
	// Tea and hot chocolate
	{"chai-latte", "CHAI", "Chai Tea Latte", "Spiced black tea concentrate with steamed milk.", "cat-tea", tags(mto, "hot"), hot(475)},
	{"matcha-latte", "MATCHA", "Matcha Latte", "Stone-ground Japanese matcha whisked into steamed milk.", "cat-tea", tags(mto, "hot"), hot(525)},
	{"london-fog", "LFOG", "London Fog", "Earl Grey with vanilla syrup and steamed milk.", "cat-tea", tags(mto, "hot"), hot(475)},
	{"hot-tea", "TEA", "Hot Tea", "A pot-brewed 16 oz cup of whole-leaf tea.", "cat-tea", tags(mto, "hot", "vegan"),
		opts(295, "EG", "Earl Grey", "EB", "English Breakfast", "JAS", "Jasmine Green", "MINT", "Peppermint (caffeine-free)")},
	{"hot-chocolate", "HOTCHOC", "Hot Chocolate", "Dark chocolate and steamed milk, topped with whipped cream.", "cat-tea", tags(mto, "hot", "caffeine-free", "kids"), hot(375)},
	{"vanilla-steamer", "STEAMER", "Vanilla Steamer", "Steamed milk with vanilla syrup.", "cat-tea", tags(mto, "hot", "caffeine-free", "kids"), hot2(325)},
	// Cold drinks
	{"iced-latte", "ICELATTE", "Iced Latte", "Espresso and cold milk over ice.", "cat-cold", tags(mto, "iced", "bestseller"), iced(475)},
	{"iced-americano", "ICEAMER", "Iced Americano", "Espresso and cold water over ice.", "cat-cold", tags(mto, "iced", "vegan"), iced(375)},
	{"cold-brew", "COLDBREW", "Cold Brew", "Steeped for 20 hours for a smooth, chocolatey cup.", "cat-cold", tags(mto, "iced", "vegan", "bestseller"), iced(425)},
	{"nitro-cold-brew", "NITRO", "Nitro Cold Brew", "Cold brew infused with nitrogen for a creamy head.", "cat-cold", tags(mto, "iced", "vegan"), iced2(495)},
	{"iced-mocha", "ICEMOCHA", "Iced Mocha", "Espresso, chocolate sauce and cold milk over ice.", "cat-cold", tags(mto, "iced"), iced(550)},
	{"iced-chai", "ICECHAI", "Iced Chai Latte", "Spiced chai and cold milk over ice.", "cat-cold", tags(mto, "iced"), iced(495)},
	{"iced-matcha", "ICEMATCHA", "Iced Matcha Latte", "Matcha shaken with cold milk over ice.", "cat-cold", tags(mto, "iced"), iced(550)},
	{"iced-tea", "ICETEA", "Iced Black Tea", "Fresh-brewed black tea, shaken over ice.", "cat-cold", tags(mto, "iced", "vegan"), iced(325)},
	{"lemonade", "LEMONADE", "Lemonade", "Fresh-squeezed lemonade, lightly sweet.", "cat-cold", tags(mto, "iced", "vegan", "caffeine-free"),
		[]vs{{"16", "16 oz", 350}, {"24", "24 oz", 450}}},
	{"coffee-frappe", "FRAPPE", "Coffee Frappé", "Coffee, milk and ice blended smooth.", "cat-cold", tags(mto, "blended"), iced(575)},
	{"berry-smoothie", "SMOOTHIE", "Strawberry Banana Smoothie", "Strawberries, banana and yogurt blended with ice.", "cat-cold", tags(mto, "blended", "caffeine-free"),
		[]vs{{"16", "16 oz", 625}, {"24", "24 oz", 775}}},
	{"bottled-water", "WATER", "Spring Water", "Still spring water from the Cascades.", "cat-cold", tags("bottled", "vegan"), one("500 ml bottle", 225)},
	{"sparkling-water", "SPARKLING", "Sparkling Water", "Lightly sparkling mineral water.", "cat-cold", tags("bottled", "vegan"), one("12 oz can", 250)},
	{"orange-juice", "OJ", "Orange Juice", "Cold-pressed, never from concentrate.", "cat-cold", tags("bottled", "vegan"), one("12 oz bottle", 450)},
	{"kombucha", "KOMBUCHA", "Ginger Kombucha", "Brewed in Seattle; tart, fizzy and gingery.", "cat-cold", tags("bottled", "vegan", "local"), one("16 oz bottle", 525)},
	// Bakery
	{"butter-croissant", "CROISSANT", "Butter Croissant", "Flaky, all-butter croissant baked every morning.", "cat-bakery", tags("vegetarian", "bestseller"), each(375)},
	{"chocolate-croissant", "CHOCCRS", "Chocolate Croissant", "Croissant dough wrapped around dark chocolate batons.", "cat-bakery", tags("vegetarian"), each(425)},
	{"almond-croissant", "ALMCRS", "Almond Croissant", "Twice-baked croissant with almond frangipane.", "cat-bakery", tags("vegetarian", "contains-nuts"), each(475)},
	{"blueberry-muffin", "BBMUFFIN", "Blueberry Muffin", "Loaded with wild blueberries and a crumb top.", "cat-bakery", tags("vegetarian"), each(375)},
	{"morning-glory-muffin", "MGMUFFIN", "Morning Glory Muffin", "Carrot, apple, raisins and walnuts.", "cat-bakery", tags("vegetarian", "contains-nuts"), each(395)},
	{"banana-bread", "BANBREAD", "Banana Walnut Bread", "A thick slice of moist banana bread.", "cat-bakery", tags("vegetarian", "contains-nuts"), one("Slice", 375)},
	{"lemon-loaf", "LEMONLOAF", "Lemon Loaf", "Lemon pound cake with a tangy glaze.", "cat-bakery", tags("vegetarian"), one("Slice", 395)},
	{"cinnamon-roll", "CINROLL", "Cinnamon Roll", "Soft roll swirled with cinnamon, with cream-cheese icing.", "cat-bakery", tags("vegetarian"), each(450)},
	{"cardamom-bun", "CARDBUN", "Cardamom Bun", "Swedish-style knotted bun; baked in small batches.", "cat-bakery", tags("vegetarian", limited), each(450)},
	{"scone", "SCONE", "Scone", "Tender, buttery scone.", "cat-bakery", tags("vegetarian"),
		opts(395, "BB", "Blueberry", "CO", "Cranberry Orange")},
	{"bagel", "BAGEL", "Bagel", "Hand-rolled, kettle-boiled bagel; ask for it toasted.", "cat-bakery", tags("vegan"),
		opts(295, "PL", "Plain", "EV", "Everything", "SES", "Sesame")},
	{"chocolate-chip-cookie", "CCCOOKIE", "Chocolate Chip Cookie", "Big, chewy, with dark chocolate chunks and sea salt.", "cat-bakery", tags("vegetarian"), each(295)},
	{"old-fashioned-donut", "DONUT", "Old-Fashioned Donut", "Crisp-edged cake donut with vanilla glaze.", "cat-bakery", tags("vegetarian"), each(275)},
	{"pastry-box", "PASTRYBOX", "Pastry Box", "Six assorted pastries for sharing.", "cat-bakery", tags("vegetarian", "serves-6"), one("Box of 6", 2400)},
	// Breakfast
	{"bacon-egg-sandwich", "BEC", "Bacon, Egg & Cheddar", "Applewood bacon, egg and aged cheddar on a brioche bun.", "cat-breakfast", tags("bestseller"), each(595)},
	{"sausage-muffin", "SAUSMUF", "Sausage, Egg & Cheese Muffin", "Turkey sausage, egg and American cheese on an English muffin.", "cat-breakfast", nil, each(575)},
	{"egg-white-wrap", "EWWRAP", "Spinach & Feta Wrap", "Egg whites, spinach, feta and tomato in a wheat wrap.", "cat-breakfast", tags("vegetarian"), each(550)},
	{"impossible-breakfast", "IMPBRK", "Impossible Breakfast Sandwich", "Plant-based sausage, egg and cheddar on ciabatta.", "cat-breakfast", tags("vegetarian"), each(650)},
	{"breakfast-burrito", "BURRITO", "Breakfast Burrito", "Scrambled eggs, potatoes, cheese and salsa verde.", "cat-breakfast", nil,
		opts(750, "BAC", "Bacon", "CHO", "Chorizo", "VEG", "Veggie")},
	{"egg-bites", "EGGBITES", "Sous-Vide Egg Bites", "Two fluffy egg bites, gluten-free.", "cat-breakfast", tags("gluten-free"),
		opts(550, "BG", "Bacon & Gruyère", "RP", "Roasted Red Pepper")},
	{"avocado-toast", "AVOTOAST", "Avocado Toast", "Smashed avocado, chili flakes and lemon on sourdough.", "cat-breakfast", tags("vegan"), each(795)},
	{"oatmeal", "OATMEAL", "Steel-Cut Oatmeal", "With brown sugar, dried fruit and nuts on the side.", "cat-breakfast", tags("vegan", "contains-nuts"), each(425)},
	{"yogurt-parfait", "PARFAIT", "Greek Yogurt Parfait", "Greek yogurt, berries and house granola.", "cat-breakfast", tags("vegetarian"), each(495)},
	// Lunch
	{"turkey-pesto-panini", "TKYPANINI", "Turkey Pesto Panini", "Roast turkey, mozzarella and basil pesto, pressed hot.", "cat-lunch", nil, each(895)},
	{"ham-swiss-baguette", "HAMBAG", "Ham & Swiss Baguette", "Black Forest ham, Swiss and butter on a fresh baguette.", "cat-lunch", nil, each(850)},
	{"caprese-sandwich", "CAPRESE", "Caprese Sandwich", "Fresh mozzarella, tomato and basil on focaccia.", "cat-lunch", tags("vegetarian"), each(825)},
	{"chicken-caesar-wrap", "CAESWRAP", "Chicken Caesar Wrap", "Grilled chicken, romaine, parmesan and Caesar dressing.", "cat-lunch", nil, each(875)},
	{"kale-salad", "KALESALAD", "Kale Caesar Salad", "Lacinato kale, parmesan and garlic croutons.", "cat-lunch", tags("vegetarian"), each(950)},
	{"grain-bowl", "GRAINBOWL", "Grain Bowl", "Farro, roasted vegetables and tahini dressing.", "cat-lunch", nil,
		opts(1095, "CHK", "Chicken", "TOFU", "Tofu (vegan)")},
	{"tomato-soup", "TOMSOUP", "Tomato Basil Soup", "Slow-roasted tomatoes and basil.", "cat-lunch", tags("vegetarian", "hot"), cupBowl(495)},
	{"clam-chowder", "CHOWDER", "Clam Chowder", "Creamy New England-style chowder with Pacific clams.", "cat-lunch", tags("hot", "local"), cupBowl(595)},
	{"protein-box", "PROTBOX", "Protein Box", "Hard-boiled egg, cheese, apple, grapes and peanut butter.", "cat-lunch", tags("vegetarian"), each(650)},
	{"mac-and-cheese", "MACCHEESE", "Mac & Cheese", "Three-cheese macaroni, baked with crumbs.", "cat-lunch", tags("vegetarian", "hot"), each(750)},
	// Coffee and tea at home
	{"harbor-blend", "HARBOR", "Harbor Blend", "Our medium house blend: milk chocolate, toasted nut, balanced.", "cat-coffee-at-home", tags("coffee-beans", "bestseller"),
		append(beans(1495, 4995), vs{"250G-GR", "250 g ground", 1495})},
	{"breakfast-blend", "BRKBLEND", "Breakfast Blend", "Bright, light and lively.", "cat-coffee-at-home", tags("coffee-beans"),
		append(beans(1395, 4695), vs{"250G-GR", "250 g ground", 1395})},
	{"dark-roast-beans", "DARKBEAN", "Puget Sound Dark", "Smoky, bittersweet and heavy-bodied.", "cat-coffee-at-home", tags("coffee-beans"), beans(1495, 4995)},
	{"espresso-roast-beans", "ESPBEAN", "Espresso Roast", "The roast behind every shot at our bar.", "cat-coffee-at-home", tags("coffee-beans"), beans(1595, 5295)},
	{"decaf-beans", "DECAFBEAN", "Decaf Harbor Blend", "Swiss Water Process decaf of our house blend.", "cat-coffee-at-home", tags("coffee-beans", "decaf"), beans(1595, 5295)},
	{"ethiopia-beans", "ETHBEAN", "Ethiopia Yirgacheffe", "Washed heirloom varieties: jasmine, bergamot, lemon.", "cat-coffee-at-home", tags("coffee-beans", "single-origin"), beans(1895, 6495)},
	{"colombia-beans", "COLBEAN", "Colombia Huila", "Red apple, caramel and cocoa.", "cat-coffee-at-home", tags("coffee-beans", "single-origin"), beans(1795, 5995)},
	{"guatemala-beans", "GUABEAN", "Guatemala Antigua", "Cocoa, spice and soft acidity.", "cat-coffee-at-home", tags("coffee-beans", "single-origin"), beans(1795, 5995)},
	{"holiday-blend", "HOLIDAY", "Holiday Blend", "Our seasonal blend with notes of fir, cherry and dark chocolate.", "cat-coffee-at-home", tags("coffee-beans", "seasonal", limited), beans(1695, 5695)},
	{"coffee-pods", "PODS", "Coffee Pods", "Compostable single-serve pods, box of 10.", "cat-coffee-at-home", tags("coffee-pods"),
		opts(1095, "HB", "Harbor Blend", "DK", "Puget Sound Dark")},
	{"instant-coffee", "INSTANT", "Instant Coffee Sticks", "Freeze-dried Harbor Blend, 8 sticks.", "cat-coffee-at-home", nil, one("8 sticks", 895)},
	{"loose-leaf-tea", "LEAFTEA", "Loose-Leaf Tea Tin", "Whole-leaf tea, 100 g tin.", "cat-coffee-at-home", tags("tea"),
		opts(1295, "EG", "Earl Grey", "EB", "English Breakfast", "JAS", "Jasmine Green", "MINT", "Peppermint")},
	{"chai-concentrate", "CHAICONC", "Chai Concentrate", "Make our chai latte at home; mix 1:1 with milk.", "cat-coffee-at-home", tags("tea"), one("32 oz carton", 695)},
	// Drinkware
	{"harbor-mug", "MUG", "Harbor Logo Mug", "Stoneware mug with the Harbor wave logo.", "cat-drinkware", tags("dishwasher-safe"),
		[]vs{{"12", "12 oz", 1495}, {"16", "16 oz", 1695}}},
	{"skyline-mug", "SKYMUG", "Seattle Skyline Mug", "Limited-run mug by a local illustrator.", "cat-drinkware", tags("local", limited), one("14 oz", 1895)},
	{"steel-tumbler", "TUMBLER", "Stainless Steel Tumbler", "Double-walled, keeps drinks hot for 6 hours.", "cat-drinkware", nil,
		[]vs{{"16", "16 oz", 2995}, {"20", "20 oz", 3295}}},
	{"cold-cup", "COLDCUP", "Reusable Cold Cup", "Clear cold cup with lid and straw.", "cat-drinkware", nil, one("24 oz", 2295)},
	{"reusable-cup", "REUSECUP", "Reusable Hot Cup", "Lightweight reusable cup; get 10¢ off every drink.", "cat-drinkware", nil, one("16 oz", 395)},
	{"travel-press", "TRVPRESS", "Travel Press", "Brew and sip from one insulated mug.", "cat-drinkware", nil, one("12 oz", 3495)},
	{"pour-over-dripper", "DRIPPER", "Pour-Over Dripper", "Ceramic cone dripper for one to two cups.", "cat-drinkware", nil, each(2495)},
	{"french-press", "FRPRESS", "French Press", "Glass and steel, eight cups.", "cat-drinkware", nil, one("34 oz", 3995)},
	// Snacks
	{"kettle-chips", "CHIPS", "Kettle Chips", "Thick-cut, kettle-cooked potato chips, 2 oz.", "cat-snacks", tags("vegan", "gluten-free"),
		opts(225, "SS", "Sea Salt", "SV", "Salt & Vinegar", "BBQ", "Barbecue")},
	{"granola-bar", "GRANBAR", "Granola Bar", "Oats and honey, chewy.", "cat-snacks", tags("vegetarian"),
		opts(275, "PB", "Peanut Butter", "DC", "Dark Chocolate")},
	{"chocolate-bar", "CHOCBAR", "Dark Chocolate Bar", "Bean-to-bar chocolate from Seattle, 2.5 oz.", "cat-snacks", tags("vegan", "local"),
		opts(395, "SS", "Sea Salt", "72", "72% Cacao")},
	{"trail-mix", "TRAILMIX", "Trail Mix", "Nuts, seeds, dried cherries and chocolate.", "cat-snacks", tags("vegetarian", "contains-nuts"), one("4 oz bag", 450)},
	{"roasted-almonds", "ALMONDS", "Roasted Almonds", "Lightly salted dry-roasted almonds.", "cat-snacks", tags("vegan", "contains-nuts"), one("3 oz bag", 395)},
	{"beef-jerky", "JERKY", "Beef Jerky", "Peppered beef jerky.", "cat-snacks", tags("gluten-free"), one("2.5 oz bag", 795)},
	{"popcorn", "POPCORN", "Kettle Corn", "Sweet-and-salty popcorn.", "cat-snacks", tags("vegan", "gluten-free"), one("5 oz bag", 350)},
	{"banana", "BANANA", "Banana", "One ripe banana.", "cat-snacks", tags("vegan", "fruit"), each(125)},
	{"apple", "APPLE", "Washington Apple", "A crisp local Honeycrisp apple.", "cat-snacks", tags("vegan", "fruit", "local"), each(150)},
	// Grocery staples
	{"milk", "MILK", "Milk", "Half-gallon carton.", "cat-grocery", tags("dairy"),
		opts(449, "WH", "Whole milk", "2P", "2% milk", "OAT", "Oat milk")},
	{"eggs", "EGGS", "Cage-Free Eggs", "Large brown eggs.", "cat-grocery", tags("vegetarian"), one("Dozen", 599)},
	{"sourdough-loaf", "SOURDOUGH", "Sourdough Loaf", "Naturally leavened loaf from a Seattle bakery.", "cat-grocery", tags("vegan", "local"), one("1 loaf", 695)},
	{"butter", "BUTTER", "Salted Butter", "Cultured salted butter.", "cat-grocery", tags("dairy"), one("1 lb", 649)},
	{"peanut-butter", "PBUTTER", "Peanut Butter", "Creamy, just peanuts and salt.", "cat-grocery", tags("vegan", "contains-nuts"), one("16 oz jar", 599)},
	{"honey", "HONEY", "Local Honey", "Raw wildflower honey from Washington hives.", "cat-grocery", tags("local"), one("12 oz jar", 899)},
	{"pasta", "PASTA", "Spaghetti", "Bronze-cut durum wheat pasta.", "cat-grocery", tags("vegan"), one("1 lb box", 299)},
	{"pasta-sauce", "SAUCE", "Marinara Sauce", "Tomato, garlic and basil.", "cat-grocery", tags("vegan"), one("24 oz jar", 549)},
	{"rolled-oats", "OATS", "Rolled Oats", "Old-fashioned whole-grain oats.", "cat-grocery", tags("vegan"), one("42 oz canister", 549)},
	{"granola", "GRANOLA", "House Granola", "Our café granola by the bag.", "cat-grocery", tags("vegetarian", "contains-nuts"), one("12 oz bag", 799)},
	{"toilet-paper", "TP", "Toilet Paper", "Two-ply, recycled.", "cat-grocery", tags("household"), one("4 rolls", 599)},
}

func products() []Product {
	out := make([]Product, 0, len(productTable))
	for _, r := range productTable {
		p := Product{
			ID:          "prd-" + r.slug,
			Name:        r.name,
			Description: r.desc,
			CategoryID:  r.cat,
			ImageURLs:   []string{imageBase + r.slug + ".jpg"},
			Tags:        append([]string(nil), r.tags...),
		}
		if isMarket(r.cat) {
			p.ImageURLs = append(p.ImageURLs, imageBase+r.slug+"-detail.jpg")
		}
		for _, v := range r.vars {
			sku := r.code
			if v.suffix != "" {
				sku += "-" + v.suffix
			}
			p.Variants = append(p.Variants, Variant{SKU: sku, ProductID: p.ID, Name: v.name, PriceMinor: v.price, Currency: Currency})
		}
		out = append(out, p)
	}
	return out
}

// isMarket reports whether a category is under the retail "Market" tree;
// retail products get a second (detail) image.
func isMarket(cat string) bool {
	switch cat {
	case "cat-coffee-at-home", "cat-drinkware", "cat-snacks", "cat-grocery":
		return true
	}
	return false
}
