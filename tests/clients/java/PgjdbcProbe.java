import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.Date;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

/**
 * pgjdbc against Phloem's PostgreSQL-wire door, the way a Java BI tool uses it: DatabaseMetaData, then
 * PreparedStatements with typed parameters. Prints one JSON object a line; tests/clients/test_pgjdbc_client.py
 * compares them with project.query(...).
 *
 * Usage: java -cp postgresql.jar:CLASSES PgjdbcProbe JDBC_URL USER PASSWORD STEP...
 * Steps: meta (tables and the columns of orders and metrics), keys (primary and foreign keys of orders),
 * query (a metric query with date, string and BigDecimal parameters, run 6 times so pgjdbc switches to a
 * named server-side statement; parameters from -Dprobe.from, probe.until, probe.exclude, probe.above),
 * months (setDate range, getDate results, fetched 5 rows at a time in a transaction).
 * A failing step prints {"kind": "error", "step": ..., "sqlstate": ..., "message": ...} and the others go on.
 */
public final class PgjdbcProbe {
    static final String QUERY = "SELECT channel, MEASURE(revenue) AS revenue, MEASURE(orders) AS orders FROM metrics"
        + " WHERE metric_time >= ? AND metric_time < ? AND channel <> ?"
        + " GROUP BY channel HAVING MEASURE(revenue) > ? ORDER BY channel";
    static final String MONTHS = "SELECT metric_time__month AS month, MEASURE(orders) AS orders FROM metrics"
        + " WHERE metric_time >= ? AND metric_time < ? GROUP BY 1 ORDER BY 1";

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        props.setProperty("ApplicationName", "pgjdbc-probe");
        try (Connection conn = DriverManager.getConnection(args[0], props)) {
            DatabaseMetaData md = conn.getMetaData();
            Map<String, Object> server = new LinkedHashMap<>();
            server.put("kind", "server");
            server.put("product", md.getDatabaseProductName());
            server.put("version", md.getDatabaseProductVersion());
            server.put("major", md.getDatabaseMajorVersion());
            server.put("driver", md.getDriverVersion());
            emit(server);
            for (int i = 3; i < args.length; i++) {
                String step = args[i];
                try {
                    switch (step) {
                        case "meta": meta(md); break;
                        case "keys": keys(md); break;
                        case "query": query(conn); break;
                        case "months": months(conn); break;
                        default: throw new IllegalArgumentException("unknown step " + step);
                    }
                } catch (SQLException e) {
                    Map<String, Object> err = new LinkedHashMap<>();
                    err.put("kind", "error");
                    err.put("step", step);
                    err.put("sqlstate", e.getSQLState());
                    err.put("message", e.getMessage());
                    emit(err);
                    if (!conn.getAutoCommit()) {
                        conn.rollback();
                    }
                }
            }
        }
    }

    static void meta(DatabaseMetaData md) throws SQLException {
        try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"})) {
            while (rs.next()) {
                Map<String, Object> t = new LinkedHashMap<>();
                t.put("kind", "table");
                t.put("schema", rs.getString("TABLE_SCHEM"));
                t.put("name", rs.getString("TABLE_NAME"));
                t.put("type", rs.getString("TABLE_TYPE"));
                t.put("remarks", rs.getString("REMARKS"));
                emit(t);
            }
        }
        for (String table : new String[] {"orders", "metrics"}) {
            try (ResultSet rs = md.getColumns(null, "public", table, "%")) {
                while (rs.next()) {
                    Map<String, Object> c = new LinkedHashMap<>();
                    c.put("kind", "column");
                    c.put("table", rs.getString("TABLE_NAME"));
                    c.put("name", rs.getString("COLUMN_NAME"));
                    c.put("data_type", rs.getInt("DATA_TYPE"));
                    c.put("type_name", rs.getString("TYPE_NAME"));
                    c.put("position", rs.getInt("ORDINAL_POSITION"));
                    c.put("nullable", rs.getString("IS_NULLABLE"));
                    c.put("remarks", rs.getString("REMARKS"));
                    emit(c);
                }
            }
        }
    }

    static void keys(DatabaseMetaData md) throws SQLException {
        try (ResultSet rs = md.getPrimaryKeys(null, "public", "orders")) {
            while (rs.next()) {
                Map<String, Object> k = new LinkedHashMap<>();
                k.put("kind", "primary_key");
                k.put("table", rs.getString("TABLE_NAME"));
                k.put("column", rs.getString("COLUMN_NAME"));
                k.put("name", rs.getString("PK_NAME"));
                emit(k);
            }
        }
        try (ResultSet rs = md.getImportedKeys(null, "public", "orders")) {
            while (rs.next()) {
                Map<String, Object> k = new LinkedHashMap<>();
                k.put("kind", "foreign_key");
                k.put("table", rs.getString("FKTABLE_NAME"));
                k.put("column", rs.getString("FKCOLUMN_NAME"));
                k.put("references_table", rs.getString("PKTABLE_NAME"));
                k.put("references_column", rs.getString("PKCOLUMN_NAME"));
                emit(k);
            }
        }
    }

    static void query(Connection conn) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(QUERY)) {
            // prepareThreshold is 5: the 5th execution on switches to a named server-side statement
            for (int run = 1; run <= 6; run++) {
                ps.setDate(1, Date.valueOf(System.getProperty("probe.from", "2024-01-01")));
                ps.setDate(2, Date.valueOf(System.getProperty("probe.until", "2024-07-01")));
                ps.setString(3, System.getProperty("probe.exclude", "marketplace"));
                ps.setBigDecimal(4, new BigDecimal(System.getProperty("probe.above", "1000.50")));
                try (ResultSet rs = ps.executeQuery()) {
                    ResultSetMetaData rmd = rs.getMetaData();
                    if (run == 1) {
                        List<Object> names = new ArrayList<>();
                        List<Object> types = new ArrayList<>();
                        for (int i = 1; i <= rmd.getColumnCount(); i++) {
                            names.add(rmd.getColumnLabel(i));
                            types.add(rmd.getColumnTypeName(i));
                        }
                        Map<String, Object> d = new LinkedHashMap<>();
                        d.put("kind", "query_columns");
                        d.put("names", names);
                        d.put("types", types);
                        emit(d);
                    }
                    while (rs.next()) {
                        Map<String, Object> r = new LinkedHashMap<>();
                        r.put("kind", "query_row");
                        r.put("run", run);
                        r.put("channel", rs.getString("channel"));
                        BigDecimal revenue = rs.getBigDecimal("revenue");
                        r.put("revenue", revenue == null ? null : revenue.toPlainString());
                        r.put("orders", rs.getLong("orders"));
                        emit(r);
                    }
                }
            }
        }
    }

    static void months(Connection conn) throws SQLException {
        conn.setAutoCommit(false); // a fetch size is honoured inside a transaction only: a portal read 5 rows a time
        try (PreparedStatement ps = conn.prepareStatement(MONTHS)) {
            ps.setFetchSize(5);
            ps.setDate(1, Date.valueOf("2023-01-01"));
            ps.setDate(2, Date.valueOf("2024-01-01"));
            try (ResultSet rs = ps.executeQuery()) {
                while (rs.next()) {
                    Map<String, Object> r = new LinkedHashMap<>();
                    r.put("kind", "month_row");
                    Date month = rs.getDate("month");
                    r.put("month", month == null ? null : month.toString());
                    r.put("orders", rs.getLong("orders"));
                    emit(r);
                }
            }
            conn.commit();
        } finally {
            conn.setAutoCommit(true);
        }
    }

    // ------------------------------------------------------------------------------------------ JSON lines

    static void emit(Map<String, Object> object) {
        System.out.println(json(object));
        System.out.flush();
    }

    static String json(Object value) {
        if (value == null) {
            return "null";
        }
        if (value instanceof Boolean || value instanceof Integer || value instanceof Long) {
            return value.toString();
        }
        if (value instanceof Map) {
            StringBuilder sb = new StringBuilder("{");
            for (Map.Entry<?, ?> e : ((Map<?, ?>) value).entrySet()) {
                if (sb.length() > 1) {
                    sb.append(", ");
                }
                sb.append(json(e.getKey().toString())).append(": ").append(json(e.getValue()));
            }
            return sb.append('}').toString();
        }
        if (value instanceof List) {
            StringBuilder sb = new StringBuilder("[");
            for (Object o : (List<?>) value) {
                if (sb.length() > 1) {
                    sb.append(", ");
                }
                sb.append(json(o));
            }
            return sb.append(']').toString();
        }
        String s = value.toString();
        StringBuilder sb = new StringBuilder("\"");
        for (int i = 0; i < s.length(); i++) {
            char ch = s.charAt(i);
            switch (ch) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                default:
                    if (ch < 0x20) {
                        sb.append(String.format("\\u%04x", (int) ch));
                    } else {
                        sb.append(ch);
                    }
            }
        }
        return sb.append('"').toString();
    }
}
