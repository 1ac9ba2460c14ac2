package command

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strata-dev/strata/eventstore"
)

// PostgresSKUs keeps SKU claims in the product_skus table (migrations/command). It lives beside the
// command service whichever event store is in use: uniqueness across streams is the one thing an
// event store cannot give.
type PostgresSKUs struct {
	pool *pgxpool.Pool
	// Grace is how old a claim must be before it may be taken over when its product never came to
	// exist (the process died between claim and append).
	Grace time.Duration
}

// NewPostgresSKUs returns SKU claims stored in the database behind pool.
func NewPostgresSKUs(pool *pgxpool.Pool) *PostgresSKUs {
	return &PostgresSKUs{pool: pool, Grace: 30 * time.Second}
}

// Claim implements [SKUClaims].
func (s *PostgresSKUs) Claim(ctx context.Context, sku, productID string, productExists func(context.Context, string) (bool, error)) error {
	tag, err := s.pool.Exec(ctx,
		`INSERT INTO product_skus (sku, product_id) VALUES ($1, $2)
		 ON CONFLICT (sku) DO UPDATE SET claimed_at = product_skus.claimed_at
		 WHERE product_skus.product_id = $2`, sku, productID)
	if err != nil {
		return fmt.Errorf("claim sku %s: %w", sku, err)
	}
	if tag.RowsAffected() == 1 {
		return nil // new claim, or this product's own
	}

	// The claim's age is measured by the database clock that stamped it: with this process's clock, a
	// skewed host would take over claims whose creators are still about to append.
	var holder string
	var stale bool
	err = s.pool.QueryRow(ctx,
		`SELECT product_id, claimed_at < now() - $2::float8 * interval '1 second' FROM product_skus WHERE sku = $1`,
		sku, s.Grace.Seconds()).Scan(&holder, &stale)
	if errors.Is(err, pgx.ErrNoRows) {
		// Released between our insert and this read: a race with a failing create. Let the client
		// retry rather than loop here.
		return fmt.Errorf("sku %s was released concurrently: %w", sku, eventstore.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("claim sku %s: %w", sku, err)
	}
	exists, err := productExists(ctx, holder)
	if err != nil {
		return fmt.Errorf("claim sku %s: check holder %s: %w", sku, holder, err)
	}
	if exists || !stale {
		return fmt.Errorf("sku %s belongs to product %s: %w", sku, holder, ErrSKUTaken)
	}
	tag, err = s.pool.Exec(ctx,
		`UPDATE product_skus SET product_id = $3, claimed_at = now() WHERE sku = $1 AND product_id = $2`, sku, holder, productID)
	if err != nil {
		return fmt.Errorf("claim sku %s from orphaned %s: %w", sku, holder, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("sku %s was claimed concurrently: %w", sku, ErrSKUTaken)
	}
	return nil
}

// Release implements [SKUClaims].
func (s *PostgresSKUs) Release(ctx context.Context, sku, productID string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM product_skus WHERE sku = $1 AND product_id = $2`, sku, productID); err != nil {
		return fmt.Errorf("release sku %s: %w", sku, err)
	}
	return nil
}
