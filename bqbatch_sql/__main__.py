from bqbatch_sql.cli import program

program()
