package posadapter

// KeyedStatements are statements that find their rows by key, by name.
var KeyedStatements = map[string]string{"record deliveries": recordDeliveriesSQL}
