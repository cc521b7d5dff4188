package server

import (
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mayfly-sh/mayfly/internal/pgsql"
)

// unverifiedPostgresHosts names the hosts of dsn that the store would reach
// without checking the server's certificate (pgsql.UnverifiedHosts): the
// DSN's password and every row could be read and changed on the path. A
// DSN pgx cannot read gives nil: opening the store reports it.
func unverifiedPostgresHosts(dsn string) []string {
	c, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil
	}
	return pgsql.UnverifiedHosts(c)
}
