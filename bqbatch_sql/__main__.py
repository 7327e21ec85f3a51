from bqbatch_sql.cli import main

main()
