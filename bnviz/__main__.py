from bnviz.cli import main

main()
