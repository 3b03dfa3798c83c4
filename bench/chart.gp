# bench/run.sh: memory per idle client and time to the last client against N, one line per server.
# gnuplot -e "data='chart.dat'; out='chart.svg'; blocks=5" bench/chart.gp   (blocks: servers)
set terminal svg size 960,460 font "sans,12" background rgb "white"
set output out
set multiplot layout 1,2
set key below horizontal
set grid
set xlabel "clients (N)"
set format x "%.0s%c"
set ylabel "server PSS per idle client (KB)"
set yrange [0:*]
set title "Memory per client"
plot for [i=0:blocks-1] data index i using 1:2 with linespoints lw 2 pt 7 title columnheader(1)
set ylabel "time until the last client has the change (ms)"
set title "Fan-out of one 1 KB change"
plot for [i=0:blocks-1] data index i using 1:3 with linespoints lw 2 pt 7 title columnheader(1)
unset multiplot
