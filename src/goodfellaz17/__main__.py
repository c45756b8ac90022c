from goodfellaz17.cli import main

main()
