// Package query will be strata's read side over HTTP: products, orders and search from the read
// models, with consistency tokens so that a client reads its own writes (DESIGN section 5). It
// arrives with the read-side issue; until then the command service is strata's only API.
package query
