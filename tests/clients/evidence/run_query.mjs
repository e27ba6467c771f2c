// Evidence's PostgreSQL connector against Phloem's wire door, called the way Evidence calls it: the
// package's runner (getRunner(options) -> runner(sql, path, batchSize)) and testConnection(options).
// Usage: node run_query.mjs '{"options": {...}, "sql": "...", "batchSize": 100}'
//        node run_query.mjs '{"options": {...}, "test": true}'
// Prints one JSON object: {columnTypes, expectedRowCount, batches: [rows per batch], rows} or
// {connection: true | {reason}}; a failure prints {error} and exits 1.
import postgres from '@evidence-dev/postgres';

const input = JSON.parse(process.argv[2]);

async function main() {
	if (input.test) {
		return { connection: await postgres.testConnection(input.options) };
	}
	const runner = await postgres.getRunner(input.options);
	const result = await runner(input.sql, 'sources/phloem/query.sql', input.batchSize);
	const batches = [];
	const rows = [];
	for await (const batch of result.rows()) {
		batches.push(batch.length);
		rows.push(...batch);
	}
	return {
		columnTypes: result.columnTypes,
		expectedRowCount: result.expectedRowCount,
		batches,
		rows
	};
}

main().then(
	(out) => {
		process.stdout.write(JSON.stringify(out) + '\n');
	},
	(err) => {
		process.stdout.write(JSON.stringify({ error: String(err && err.message ? err.message : err) }) + '\n');
		process.exitCode = 1;
	}
);
